package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/mr-tron/base58"
)

// Crypto fixtures from the atproto interop tests (CC0), see
// ../testdata/README.md.
const (
	signatureFixturesFile = "../testdata/crypto/signature-fixtures.json"
	didKeyK256File        = "../testdata/crypto/w3c_didkey_K256.json"
)

func TestSignatureFixtures(t *testing.T) {
	var fixtures []struct {
		Comment            string   `json:"comment"`
		MessageBase64      string   `json:"messageBase64"`
		Algorithm          string   `json:"algorithm"`
		PublicKeyDID       string   `json:"publicKeyDid"`
		PublicKeyMultibase string   `json:"publicKeyMultibase"`
		SignatureBase64    string   `json:"signatureBase64"`
		ValidSignature     bool     `json:"validSignature"`
		Tags               []string `json:"tags"`
	}
	readFixtureJSON(t, signatureFixturesFile, &fixtures)
	if len(fixtures) == 0 {
		t.Fatal("no fixtures")
	}
	for i, f := range fixtures {
		t.Run(fmt.Sprintf("%d %s", i, f.Comment), func(t *testing.T) {
			msg := fixtureB64(t, f.MessageBase64)
			sig := fixtureB64(t, f.SignatureBase64)
			fromDID, err := atcrypto.ParsePublicDIDKey(f.PublicKeyDID)
			if err != nil {
				t.Fatal(err)
			}
			if fromDID.DIDKey() != f.PublicKeyDID {
				t.Fatalf("did:key round trip: %s", fromDID.DIDKey())
			}
			// publicKeyMultibase is the bare compressed point, without the
			// multicodec prefix that ParsePublicMultibase expects.
			if len(f.PublicKeyMultibase) < 2 || f.PublicKeyMultibase[0] != 'z' {
				t.Fatalf("multibase %q", f.PublicKeyMultibase)
			}
			raw, err := base58.Decode(f.PublicKeyMultibase[1:])
			if err != nil {
				t.Fatal(err)
			}
			var fromMB atcrypto.PublicKey
			switch f.Algorithm {
			case "ES256":
				fromMB, err = atcrypto.ParsePublicBytesP256(raw)
			case "ES256K":
				fromMB, err = atcrypto.ParsePublicBytesK256(raw)
			default:
				t.Fatalf("algorithm %q", f.Algorithm)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !fromMB.Equal(fromDID) {
				t.Fatal("the did:key and multibase keys differ")
			}
			for name, pub := range map[string]atcrypto.PublicKey{"did:key": fromDID, "multibase": fromMB} {
				err := pub.HashAndVerify(msg, sig)
				if (err == nil) != f.ValidSignature {
					t.Fatalf("%s: verify = %v, validSignature %v", name, err, f.ValidSignature)
				}
				// A high-S signature is the valid one's twin: only the
				// lenient check (for JWTs) takes it.
				if slices.Contains(f.Tags, "high-s") {
					if err := pub.HashAndVerifyLenient(msg, sig); err != nil {
						t.Fatalf("%s: lenient verify of a high-S signature: %v", name, err)
					}
				}
				if pub.HashAndVerify(append(bytes.Clone(msg), 0), sig) == nil {
					t.Fatalf("%s: verified another message", name)
				}
			}
		})
	}
}

func TestDIDKeyK256Fixtures(t *testing.T) {
	var fixtures []struct {
		PrivateKeyBytesHex string `json:"privateKeyBytesHex"`
		PublicDIDKey       string `json:"publicDidKey"`
	}
	readFixtureJSON(t, didKeyK256File, &fixtures)
	if len(fixtures) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range fixtures {
		b, err := hex.DecodeString(f.PrivateKeyBytesHex)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := atcrypto.ParsePrivateBytesK256(b)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := priv.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if pub.DIDKey() != f.PublicDIDKey {
			t.Fatalf("%s: did:key %s, want %s", f.PrivateKeyBytesHex, pub.DIDKey(), f.PublicDIDKey)
		}
		parsed, err := atcrypto.ParsePublicDIDKey(f.PublicDIDKey)
		if err != nil || !parsed.Equal(pub) {
			t.Fatalf("%s: parse: %v", f.PublicDIDKey, err)
		}
	}
}

// TestCommitSignature: the commits Apply signs verify with the repo key's
// public key and with no other, and a changed commit no longer verifies.
func TestCommitSignature(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	pub := impPub(t, r.key)
	otherK256, _ := atcrypto.GeneratePrivateKeyK256()
	otherP256, _ := atcrypto.GeneratePrivateKeyP256()
	first, err := r.Init(ctx)
	if err != nil {
		t.Fatal(err)
	}
	commits := []*Commit{first, mustApply(t, r, create("app.bsky.feed.post", "a", post("a")))}
	for _, c := range commits {
		sc, _, err := irepo.LoadCommitFromCAR(ctx, bytes.NewReader(c.CAR))
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.VerifySignature(pub); err != nil {
			t.Fatalf("rev %s: %v", c.Rev, err)
		}
		for _, k := range []atcrypto.PrivateKey{otherK256, otherP256} {
			if sc.VerifySignature(impPub(t, k)) == nil {
				t.Fatalf("rev %s verified with another key", c.Rev)
			}
		}
		// Low-S, 64-byte compact signature, as atproto requires.
		if len(sc.Sig) != 64 {
			t.Fatalf("signature of %d bytes", len(sc.Sig))
		}
		changed := *sc
		changed.Rev = "2222222222222"
		if changed.VerifySignature(pub) == nil {
			t.Fatal("a changed commit verified")
		}
	}
	// The exported head verifies too.
	sc, _, err := irepo.LoadRepoFromCAR(ctx, bytes.NewReader(impExport(t, r)))
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.VerifySignature(pub); err != nil {
		t.Fatal(err)
	}
}
