package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pdsbox/pds/internal/testpds"
)

// testServer is the real server, wired as `pds serve` wires it, on
// 127.0.0.1 with a mock PLC directory.
type testServer struct {
	URL string
	app *app
	plc *testpds.MockPLC
	// stop closes the server and its database early (it is also closed
	// with the test).
	stop func()
}

func startServer(t *testing.T, extra map[string]string) *testServer {
	t.Helper()
	return startServerWith(t, extra, nil)
}

// call does one XRPC request. body may be nil, a []byte (sent raw with
// contentType), or a value sent as JSON.
func (s *testServer) call(t *testing.T, method, nsid, token string, query string, body any) (int, map[string]any) {
	t.Helper()
	status, raw, _ := s.callRaw(t, method, nsid, token, query, body, "")
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: non-JSON answer %d: %q", nsid, status, raw)
		}
	}
	return status, out
}

func (s *testServer) callRaw(t *testing.T, method, nsid, token, query string, body any, contentType string) (int, []byte, http.Header) {
	t.Helper()
	u := s.URL + "/xrpc/" + nsid
	if query != "" {
		u += "?" + query
	}
	authz := ""
	if token != "" {
		authz = "Bearer " + token
	}
	return testpds.Request(t, method, u, authz, body, contentType)
}

func wantStatus(t *testing.T, what string, status int, out map[string]any, want int, wantErr string) {
	t.Helper()
	if status != want {
		t.Fatalf("%s: status %d (%v), want %d", what, status, out, want)
	}
	if wantErr != "" && out["error"] != wantErr {
		t.Fatalf("%s: error %v (%v), want %s", what, out["error"], out["message"], wantErr)
	}
}

// createAccount makes alice.test with the server's invite code.
func (s *testServer) createAccount(t *testing.T) (did, access, refresh string) {
	t.Helper()
	code, err := s.app.accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	st, out := s.call(t, "POST", "com.atproto.server.createAccount", "", "", map[string]any{
		"handle": "alice.test", "email": "alice@example.com", "password": "hunter2-hunter2", "inviteCode": code,
	})
	wantStatus(t, "createAccount", st, out, 200, "")
	return out["did"].(string), out["accessJwt"].(string), out["refreshJwt"].(string)
}

func post(text string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-29T12:00:00.000Z"}
}

func TestFirstHour(t *testing.T) {
	s := startServer(t, nil)

	// Describe, then create the account with the invite code.
	st, desc := s.call(t, "GET", "com.atproto.server.describeServer", "", "", nil)
	wantStatus(t, "describeServer", st, desc, 200, "")
	if desc["inviteCodeRequired"] != true {
		t.Fatalf("describeServer: %v", desc)
	}
	did, access, refresh := s.createAccount(t)
	if !strings.HasPrefix(did, "did:plc:") || len(s.plc.Ops(did)) != 1 {
		t.Fatalf("did %s, PLC ops %d", did, len(s.plc.Ops(did)))
	}

	// Log in by handle and by email; refresh.
	for _, ident := range []string{"alice.test", "ALICE@example.com", did} {
		st, out := s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": ident, "password": "hunter2-hunter2"})
		wantStatus(t, "createSession "+ident, st, out, 200, "")
		if out["did"] != did || out["handle"] != "alice.test" || out["active"] != true {
			t.Fatalf("createSession: %v", out)
		}
	}
	st, ref := s.call(t, "POST", "com.atproto.server.refreshSession", refresh, "", nil)
	wantStatus(t, "refreshSession", st, ref, 200, "")
	access = ref["accessJwt"].(string)
	st, gs := s.call(t, "GET", "com.atproto.server.getSession", access, "", nil)
	wantStatus(t, "getSession", st, gs, 200, "")
	if gs["did"] != did || gs["email"] != "alice@example.com" {
		t.Fatalf("getSession: %v", gs)
	}

	// Writes.
	st, c1 := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{
		"repo": did, "collection": "app.bsky.feed.post", "record": post("hello world"),
	})
	wantStatus(t, "createRecord", st, c1, 200, "")
	if c1["validationStatus"] != "valid" {
		t.Fatalf("createRecord: %v", c1)
	}
	st, p1 := s.call(t, "POST", "com.atproto.repo.putRecord", access, "", map[string]any{
		"repo": "alice.test", "collection": "app.bsky.actor.profile", "rkey": "self",
		"record": map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Alice"},
	})
	wantStatus(t, "putRecord (create)", st, p1, 200, "")
	st, p2 := s.call(t, "POST", "com.atproto.repo.putRecord", access, "", map[string]any{
		"repo": did, "collection": "app.bsky.actor.profile", "rkey": "self", "swapRecord": p1["cid"],
		"record": map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Alice A."},
	})
	wantStatus(t, "putRecord (update)", st, p2, 200, "")
	if p2["cid"] == p1["cid"] {
		t.Fatal("putRecord update kept the CID")
	}
	var writes []map[string]any
	for i := range 30 {
		writes = append(writes, map[string]any{
			"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post",
			"rkey": testTID(i), "value": post(fmt.Sprintf("post %d", i)),
		})
	}
	st, aw := s.call(t, "POST", "com.atproto.repo.applyWrites", access, "", map[string]any{"repo": did, "writes": writes})
	wantStatus(t, "applyWrites", st, aw, 200, "")
	if n := len(aw["results"].([]any)); n != 30 {
		t.Fatalf("applyWrites: %d results", n)
	}
	rkey1 := strings.TrimPrefix(c1["uri"].(string), "at://"+did+"/app.bsky.feed.post/")
	st, d1 := s.call(t, "POST", "com.atproto.repo.deleteRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey1})
	wantStatus(t, "deleteRecord", st, d1, 200, "")
	st, gr := s.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+did+"&collection=app.bsky.feed.post&rkey="+rkey1, nil)
	wantStatus(t, "getRecord (deleted)", st, gr, 400, "RecordNotFound")

	// List in both directions with cursors.
	for _, reverse := range []bool{false, true} {
		var got []string
		cursor := ""
		for range 10 {
			q := fmt.Sprintf("repo=%s&collection=app.bsky.feed.post&limit=7&reverse=%v", did, reverse)
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			st, lr := s.call(t, "GET", "com.atproto.repo.listRecords", "", q, nil)
			wantStatus(t, "listRecords", st, lr, 200, "")
			for _, r := range lr["records"].([]any) {
				got = append(got, r.(map[string]any)["uri"].(string))
			}
			c, _ := lr["cursor"].(string)
			if c == "" {
				break
			}
			cursor = c
		}
		if len(got) != 30 {
			t.Fatalf("reverse=%v: listed %d records, want 30", reverse, len(got))
		}
		for i := 1; i < len(got); i++ {
			if (got[i-1] < got[i]) != reverse {
				t.Fatalf("reverse=%v: out of order at %d: %s, %s", reverse, i, got[i-1], got[i])
			}
		}
	}

	// A blob: upload, reference, fetch back byte-identical.
	img := pngBytes(t, 5000)
	st, raw, _ := s.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", img, "image/png")
	var up map[string]any
	_ = json.Unmarshal(raw, &up)
	wantStatus(t, "uploadBlob", st, up, 200, "")
	blob := up["blob"].(map[string]any)
	if blob["mimeType"] != "image/png" || blob["size"] != float64(len(img)) {
		t.Fatalf("uploadBlob: %v", blob)
	}
	withImage := post("look")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "a picture", "image": blob}}}
	st, ci := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": withImage})
	wantStatus(t, "createRecord with image", st, ci, 200, "")
	blobCID := blob["ref"].(map[string]any)["$link"].(string)
	st, got, hdr := s.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+blobCID, nil, "")
	if st != 200 || !bytes.Equal(got, img) {
		t.Fatalf("getBlob: status %d, %d bytes", st, len(got))
	}
	if hdr.Get("Content-Type") != "image/png" || hdr.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(hdr.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("getBlob headers: %v", hdr)
	}
	st, lb := s.call(t, "GET", "com.atproto.sync.listBlobs", "", "did="+did, nil)
	wantStatus(t, "listBlobs", st, lb, 200, "")
	if cids := lb["cids"].([]any); len(cids) != 1 || cids[0] != blobCID {
		t.Fatalf("listBlobs: %v", lb)
	}

	// An app password: log in with it, then revoke it and see it refused.
	st, ap := s.call(t, "POST", "com.atproto.server.createAppPassword", access, "", map[string]any{"name": "phone"})
	wantStatus(t, "createAppPassword", st, ap, 200, "")
	st, as := s.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": ap["password"]})
	wantStatus(t, "createSession (app password)", st, as, 200, "")
	appAccess := as["accessJwt"].(string)
	st, out := s.call(t, "POST", "com.atproto.repo.createRecord", appAccess, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("from my phone")})
	wantStatus(t, "createRecord (app password)", st, out, 200, "")
	st, out = s.call(t, "POST", "com.atproto.server.createAppPassword", appAccess, "", map[string]any{"name": "sneaky"})
	wantStatus(t, "createAppPassword from an app password", st, out, 400, "InvalidToken")
	st, out = s.call(t, "POST", "com.atproto.server.revokeAppPassword", access, "", map[string]any{"name": "phone"})
	wantStatus(t, "revokeAppPassword", st, out, 200, "")
	st, out = s.call(t, "POST", "com.atproto.repo.createRecord", appAccess, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("revoked")})
	wantStatus(t, "createRecord after revocation", st, out, 400, "InvalidToken")
	st, out = s.call(t, "POST", "com.atproto.server.refreshSession", as["refreshJwt"].(string), "", nil)
	wantStatus(t, "refresh after revocation", st, out, 400, "ExpiredToken") // the reference: "Token has been revoked"
}

// pngBytes returns n bytes that start with a PNG signature.
func pngBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	copy(b, "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	return b
}
