package identity

import (
	"errors"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/did-method-plc/go-didplc"
)

func mustK256(t *testing.T) atcrypto.PrivateKeyExportable {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func didKey(t *testing.T, k atcrypto.PrivateKey) string {
	t.Helper()
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub.DIDKey()
}

// TestPLCUpdateAndSubmission signs a migration operation as the old server
// does (signPlcOperation) and checks it as the new one does
// (submitPlcOperation), then breaks it one field at a time.
func TestPLCUpdateAndSubmission(t *testing.T) {
	oldRot, newRot, oldSig, newSig := mustK256(t), mustK256(t), mustK256(t), mustK256(t)
	oldPub, _ := oldSig.PublicKey()
	_, genesis, err := PLCGenesis(oldRot, oldPub, "alice.old.test", "https://old.example")
	if err != nil {
		t.Fatal(err)
	}
	want := PLCExpect{RotationKey: didKey(t, newRot), SigningKey: didKey(t, newSig), Endpoint: "https://new.example", Handle: "alice.new.test"}
	ch := PLCChanges{
		RotationKeys:        []string{want.RotationKey},
		AlsoKnownAs:         []string{"at://alice.new.test"},
		VerificationMethods: map[string]string{"atproto": want.SigningKey},
		Services:            map[string]didplc.OpService{"atproto_pds": {Type: "AtprotoPersonalDataServer", Endpoint: "https://new.example"}},
	}
	op, err := PLCUpdate(genesis, oldRot, ch)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the old rotation key, chained to the genesis.
	if _, err := didplc.VerifySignatureAny(op, genesis.RotationKeys); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if op.Prev == nil || *op.Prev != genesis.CID().String() {
		t.Fatalf("prev %v", op.Prev)
	}
	if err := CheckPLCSubmission(op, want); err != nil {
		t.Fatalf("good operation refused: %v", err)
	}
	// Fields left out are kept from the last operation.
	same, err := PLCUpdate(genesis, oldRot, PLCChanges{})
	if err != nil || same.Services["atproto_pds"].Endpoint != "https://old.example" || same.AlsoKnownAs[0] != "at://alice.old.test" {
		t.Fatalf("unchanged update: %+v %v", same, err)
	}

	resign := func(f func(o *didplc.RegularOp)) *didplc.RegularOp {
		o := *op
		o.Services = map[string]didplc.OpService{"atproto_pds": op.Services["atproto_pds"]}
		o.VerificationMethods = map[string]string{"atproto": want.SigningKey}
		f(&o)
		o.Sig = nil
		if err := o.Sign(oldRot); err != nil {
			t.Fatal(err)
		}
		return &o
	}
	bad := map[string]*didplc.RegularOp{
		"drops our service": resign(func(o *didplc.RegularOp) { delete(o.Services, "atproto_pds") }),
		"other endpoint": resign(func(o *didplc.RegularOp) {
			o.Services["atproto_pds"] = didplc.OpService{Type: "AtprotoPersonalDataServer", Endpoint: "https://evil.example"}
		}),
		"wrong service type": resign(func(o *didplc.RegularOp) {
			o.Services["atproto_pds"] = didplc.OpService{Type: "Other", Endpoint: "https://new.example"}
		}),
		"drops our signing key": resign(func(o *didplc.RegularOp) { o.VerificationMethods["atproto"] = didKey(t, oldSig) }),
		"no signing key":        resign(func(o *didplc.RegularOp) { delete(o.VerificationMethods, "atproto") }),
		"drops our rotation key": resign(func(o *didplc.RegularOp) {
			o.RotationKeys = []string{didKey(t, oldRot)}
		}),
		"other handle":     resign(func(o *didplc.RegularOp) { o.AlsoKnownAs = []string{"at://mallory.test"} }),
		"bad rotation key": resign(func(o *didplc.RegularOp) { o.RotationKeys = append(o.RotationKeys, "did:key:nope") }),
		"genesis":          resign(func(o *didplc.RegularOp) { o.Prev = nil }),
		"unsigned":         func() *didplc.RegularOp { o := *op; o.Sig = nil; return &o }(),
		"tombstone type":   resign(func(o *didplc.RegularOp) { o.Type = "plc_tombstone" }),
	}
	for name, o := range bad {
		t.Run(name, func(t *testing.T) {
			err := CheckPLCSubmission(o, want)
			if !errors.Is(err, ErrInvalidPLCOperation) {
				t.Fatalf("err = %v", err)
			}
			t.Log(err)
		})
	}
	if _, err := PLCUpdate(genesis, oldRot, PLCChanges{RotationKeys: []string{}}); !errors.Is(err, ErrInvalidPLCOperation) {
		t.Fatalf("no rotation keys: %v", err)
	}
}
