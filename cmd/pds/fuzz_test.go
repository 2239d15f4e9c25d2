package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/account"
)

// Fuzz targets for the decoders that take network bytes, run against the
// real server (real bbolt file, real handlers). The property is the same
// for each: any input gets an answer, a client error is the XRPC envelope
// with a 4xx, and nothing is a 5xx or a panic. Seeds are in the code and in
// testdata/fuzz; .ci/run fuzzes each target for a few seconds.

// fuzzServer is a server with the account made and a post written, for a
// fuzz target; its handler is called in process.
type fuzzServer struct {
	*testServer
	did, access string
	postURI     string
}

func newFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	s := startServerWith(f, map[string]string{"PDS_BLOB_UPLOAD_LIMIT": "100000"}, nil)
	ctx := context.Background()
	acct, _, err := s.app.accounts.Create(ctx, account.CreateParams{Handle: "alice.test", Password: "hunter2-hunter2"})
	if err != nil {
		f.Fatal(err)
	}
	sess, err := s.app.auth.Login(ctx, "alice.test", "hunter2-hunter2")
	if err != nil {
		f.Fatal(err)
	}
	fs := &fuzzServer{testServer: s, did: acct.DID.String(), access: sess.AccessJWT}
	st, out := fs.do(f, "POST", "com.atproto.repo.createRecord", "", []byte(`{"repo":"`+fs.did+`","collection":"app.bsky.feed.post","record":{"$type":"app.bsky.feed.post","text":"seed","createdAt":"2026-11-29T12:00:00.000Z"}}`))
	if st != 200 {
		f.Fatalf("seed post: %d %s", st, out)
	}
	var res struct{ URI string }
	_ = json.Unmarshal(out, &res)
	fs.postURI = res.URI
	return fs
}

// do calls the handler in process and returns the status and body.
func (s *fuzzServer) do(tb testing.TB, method, nsid, rawQuery string, body []byte) (int, []byte) {
	tb.Helper()
	req := httptest.NewRequest(method, "http://localhost/xrpc/"+nsid, bytes.NewReader(body))
	req.URL.RawQuery = rawQuery
	req.RequestURI = req.URL.RequestURI()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+s.access)
	rec := httptest.NewRecorder()
	s.app.handler.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// checkAnswer is the common property: no 5xx, and an error is the envelope.
func checkAnswer(t *testing.T, what string, status int, body []byte) {
	t.Helper()
	if status >= 500 {
		t.Fatalf("%s: server error %d: %s", what, status, body)
	}
	if status >= 400 {
		var env struct{ Error, Message string }
		if err := json.Unmarshal(body, &env); err != nil || env.Error == "" {
			t.Fatalf("%s: %d without an XRPC error envelope: %q", what, status, body)
		}
	}
}

// fuzzProcedures are the JSON procedures a session may call.
var fuzzProcedures = []string{
	"com.atproto.repo.createRecord",
	"com.atproto.repo.putRecord",
	"com.atproto.repo.deleteRecord",
	"com.atproto.repo.applyWrites",
	"com.atproto.server.createAppPassword",
	"com.atproto.server.revokeAppPassword",
	"com.atproto.identity.updateHandle",
	"app.bsky.actor.putPreferences",
	"com.atproto.server.createAccount",
	"com.atproto.server.createInviteCode",
}

// FuzzXRPCBodies sends arbitrary JSON bodies to every JSON procedure.
func FuzzXRPCBodies(f *testing.F) {
	s := newFuzzServer(f)
	seeds := []string{
		`{"repo":"` + s.did + `","collection":"app.bsky.feed.post","record":{"$type":"app.bsky.feed.post","text":"x","createdAt":"2026-11-29T12:00:00.000Z"}}`,
		`{"repo":"` + s.did + `","collection":"app.bsky.actor.profile","rkey":"self","record":{"displayName":"A","avatar":{"$type":"blob","ref":{"$link":"bafkreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie"},"mimeType":"image/png","size":-1}}}`,
		`{"repo":"` + s.did + `","writes":[{"$type":"com.atproto.repo.applyWrites#create","collection":"com.example.x","value":{"a":{"$bytes":"AAEC"},"l":{"$link":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie"}}}]}`,
		`{"repo":"` + s.did + `","collection":"app.bsky.feed.post","rkey":"3jzfcijpj2z2a","swapRecord":null,"record":{}}`,
		`{"repo":"` + s.did + `","collection":"app.bsky.feed.post","rkey":"` + s.postURI[strings.LastIndexByte(s.postURI, '/')+1:] + `"}`,
		`{"name":"x","privileged":true}`,
		`{"handle":"bob.test"}`,
		`{"preferences":[{"$type":"app.bsky.actor.defs#adultContentPref","enabled":true}]}`,
		`{"handle":"bob.test","password":"p","inviteCode":"x"}`,
		`{"useCount":1}`,
		`{"identifier":1}`,
		`{"a":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`,
		``, `null`, `[]`, `"x"`, `{"validate":"yes"}`, "\xff\xfe",
	}
	for i, sd := range seeds {
		f.Add(uint8(i), []byte(sd))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		nsid := fuzzProcedures[int(which)%len(fuzzProcedures)]
		st, out := s.do(t, "POST", nsid, "", body)
		checkAnswer(t, nsid, st, out)
	})
}

// fuzzQueries are the GET methods served here that need no network.
var fuzzQueries = []string{
	"com.atproto.repo.getRecord",
	"com.atproto.repo.listRecords",
	"com.atproto.repo.describeRepo",
	"com.atproto.sync.getRepo",
	"com.atproto.sync.getLatestCommit",
	"com.atproto.sync.getRecord",
	"com.atproto.sync.getBlocks",
	"com.atproto.sync.listRepos",
	"com.atproto.sync.getRepoStatus",
	"com.atproto.sync.getBlob",
	"com.atproto.sync.listBlobs",
	"com.atproto.sync.getHead",
	"com.atproto.sync.getCheckout",
	"com.atproto.server.describeServer",
	"com.atproto.server.getSession",
	"com.atproto.server.listAppPasswords",
	"com.atproto.server.getServiceAuth",
	"com.atproto.identity.getRecommendedDidCredentials",
	"app.bsky.actor.getPreferences",
}

// FuzzQueryParams sends arbitrary query strings to every query method.
func FuzzQueryParams(f *testing.F) {
	s := newFuzzServer(f)
	rkey := s.postURI[strings.LastIndexByte(s.postURI, '/')+1:]
	seeds := []string{
		"repo=" + s.did + "&collection=app.bsky.feed.post&rkey=" + rkey,
		"repo=" + s.did + "&collection=app.bsky.feed.post&limit=100&reverse=true&cursor=" + rkey,
		"repo=alice.test",
		"did=" + s.did + "&since=3jzfcijpj2z2a",
		"did=" + s.did,
		"did=" + s.did + "&collection=app.bsky.feed.post&rkey=" + rkey,
		"did=" + s.did + "&cids=bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie&cids=x",
		"limit=1000&cursor=did:plc:zzz",
		"did=" + s.did + "&cid=bafkreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie",
		"did=" + s.did + "&limit=0&cursor=%ff",
		"aud=did:web:api.bsky.app&lxm=app.bsky.feed.getTimeline&exp=99999999999",
		"aud=did:web:x%23y&lxm=com.atproto.server.createAccount",
		"limit=-1", "limit=1e3", "reverse=maybe", "%zz", "&&&==&", "repo=" + strings.Repeat("a", 3000),
	}
	for i, sd := range seeds {
		f.Add(uint8(i), sd)
	}
	f.Fuzz(func(t *testing.T, which uint8, rawQuery string) {
		if strings.ContainsAny(rawQuery, "# \r\n\x00") {
			return // not a query string a client can send on the request line
		}
		nsid := fuzzQueries[int(which)%len(fuzzQueries)]
		st, out := s.do(t, "GET", nsid, rawQuery, nil)
		checkAnswer(t, nsid+"?"+rawQuery, st, out)
	})
}

// FuzzFirehoseCursor opens subscribeRepos with arbitrary cursors over a
// real websocket: a cursor that is not a seq is refused with 400 before
// the upgrade; any other gets frames (replay, FutureCursor) and a clean
// close, never a 5xx.
func FuzzFirehoseCursor(f *testing.F) {
	s := newFuzzServer(f)
	for _, c := range []string{"0", "1", "2", "3", "999999", "-1", "", "1.5", "0x10", "9223372036854775807", "9223372036854775808", "+1", " 1", "１"} {
		f.Add(c)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, cursor string) {
		u := "ws://" + host + "/xrpc/com.atproto.sync.subscribeRepos?cursor=" + url.QueryEscape(cursor)
		conn, resp, err := d.Dial(u, nil)
		if err != nil {
			if resp == nil {
				t.Fatalf("cursor %q: no answer: %v", cursor, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("cursor %q: handshake refused with %d: %s", cursor, resp.StatusCode, body)
			}
			checkAnswer(t, "cursor "+cursor, resp.StatusCode, body)
			return
		}
		defer conn.Close()
		// A valid cursor: at most the few events there are, or an error
		// frame; read until quiet.
		_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	})
}
