package plcdir

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/did-method-plc/go-didplc"
	bolt "go.etcd.io/bbolt"
)

func newDir(t *testing.T) (*Directory, *didplc.Client) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "plc.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	d, err := Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return d, &didplc.Client{DirectoryURL: srv.URL, HTTPClient: *srv.Client()}
}

func key(t *testing.T) *atcrypto.PrivateKeyK256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func genesis(t *testing.T, rot *atcrypto.PrivateKeyK256, handle string) (string, didplc.RegularOp) {
	t.Helper()
	pub, _ := rot.PublicKey()
	op, err := didplc.NewAtproto(rot, handle, "http://localhost:2583", []string{pub.DIDKey()})
	if err != nil {
		t.Fatal(err)
	}
	// NewAtproto leaves Type empty; the directory requires it.
	op.Type, op.Sig = "plc_operation", nil
	if err := op.Sign(rot); err != nil {
		t.Fatal(err)
	}
	did, err := op.DID()
	if err != nil {
		t.Fatal(err)
	}
	return did, op
}

func update(t *testing.T, prev didplc.RegularOp, signer *atcrypto.PrivateKeyK256, handle string) didplc.RegularOp {
	t.Helper()
	p := prev.CID().String()
	op := prev
	op.Sig = nil
	op.Prev = &p
	op.AlsoKnownAs = []string{"at://" + handle}
	if err := op.Sign(signer); err != nil {
		t.Fatal(err)
	}
	return op
}

// TestDirectoryWithGoDidplcClient drives the directory with go-didplc's
// own client, as goat and the PDS do, and checks the served log with
// go-didplc's verifier.
func TestDirectoryWithGoDidplcClient(t *testing.T) {
	ctx := context.Background()
	_, c := newDir(t)
	rot := key(t)
	did, gen := genesis(t, rot, "alice.test")
	if err := c.Submit(ctx, did, &gen); err != nil {
		t.Fatalf("genesis: %v", err)
	}
	doc, err := c.Resolve(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	if doc.ID != did || len(doc.AlsoKnownAs) != 1 || doc.AlsoKnownAs[0] != "at://alice.test" || len(doc.Service) != 1 || doc.Service[0].ServiceEndpoint != "http://localhost:2583" {
		t.Fatalf("doc: %+v", doc)
	}
	upd := update(t, gen, rot, "bob.test")
	if err := c.Submit(ctx, did, &upd); err != nil {
		t.Fatalf("update: %v", err)
	}
	if doc, err = c.Resolve(ctx, did); err != nil || doc.AlsoKnownAs[0] != "at://bob.test" {
		t.Fatalf("after update: %+v %v", doc, err)
	}
	audit, err := c.AuditLog(ctx, did)
	if err != nil || len(audit) != 2 {
		t.Fatalf("audit: %d %v", len(audit), err)
	}
	if err := didplc.VerifyOpLog(audit); err != nil {
		t.Fatalf("served log does not verify: %v", err)
	}
	ops, err := c.OpLog(ctx, did)
	if err != nil || len(ops) != 2 || ops[1].Regular.CID() != upd.CID() {
		t.Fatalf("oplog: %v %v", ops, err)
	}

	// Refusals: each leaves the log as it was.
	other := key(t)
	otherDID, otherGen := genesis(t, other, "carol.test")
	badSig := update(t, upd, other, "mallory.test")
	fork := update(t, gen, rot, "fork.test")
	notGenesis := update(t, otherGen, other, "x.test")
	for _, tc := range []struct {
		name string
		did  string
		op   didplc.Operation
	}{
		{"update signed by a key that is not a rotation key", did, &badSig},
		{"fork from an older operation", did, &fork},
		{"genesis under another DID", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &otherGen},
		{"first operation that is not a genesis", otherDID, &notGenesis},
	} {
		err := c.Submit(ctx, tc.did, tc.op)
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("%s: err %v, want HTTP 400", tc.name, err)
		}
	}
	if audit, _ := c.AuditLog(ctx, did); len(audit) != 2 {
		t.Fatalf("a refused operation changed the log: %d entries", len(audit))
	}
	if _, err := c.Resolve(ctx, otherDID); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown DID: %v", err)
	}

	// A tombstone ends the DID: 410, and nothing after it.
	tomb := &didplc.TombstoneOp{Type: "plc_tombstone", Prev: upd.CID().String()}
	if err := tomb.Sign(rot); err != nil {
		t.Fatal(err)
	}
	if err := c.Submit(ctx, did, tomb); err != nil {
		t.Fatalf("tombstone: %v", err)
	}
	if _, err := c.Resolve(ctx, did); err == nil || !strings.Contains(err.Error(), "410") {
		t.Fatalf("tombstoned DID: %v", err)
	}
	after := update(t, upd, rot, "again.test")
	p := tomb.CID().String()
	after.Prev = &p
	after.Sig = nil
	_ = after.Sign(rot)
	if err := c.Submit(ctx, did, &after); err == nil {
		t.Fatal("an operation after the tombstone was accepted")
	}
}

func TestHTTPBadInput(t *testing.T) {
	d, c := newDir(t)
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "{", 400},
		{"POST", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", `{"type":"create"}`, 400},
		{"POST", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", `{"type":"plc_operation"}`, 400},
		{"POST", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", strings.Repeat(" ", MaxOpSize+1), 400},
		{"GET", "/not-a-did", "", 404},
		{"GET", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/log/whatever", "", 404},
		{"PUT", "/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "", 405},
		{"GET", "/_health", "", 200},
	} {
		req, _ := http.NewRequest(tc.method, c.DirectoryURL+tc.path, strings.NewReader(tc.body))
		resp, err := c.HTTPClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %.20q: %d, want %d", tc.method, tc.path, tc.body, resp.StatusCode, tc.want)
		}
	}
	if _, err := d.AuditLog("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"); !errors.Is(err, errNotFound) {
		t.Fatalf("bad input stored something: %v", err)
	}
}
