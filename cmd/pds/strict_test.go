package main

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawExchange writes req (a whole HTTP/1.1 request, as bytes on the wire)
// to the server and reads one answer, which must be an XRPC error envelope
// or empty. It returns the status and the decoded body.
func (s *testServer) rawExchange(t *testing.T, req string) (int, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("non-JSON answer %d: %q", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// TestPathsNotNSIDs: an /xrpc/ path that is not a method name is the
// client's error (400 InvalidRequest, as the reference answers it), never
// a 501 "not implemented", with or without a session; nothing changes.
func TestPathsNotNSIDs(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	before := s.snapshot(t, did)
	for _, p := range []string{
		"/xrpc/../x",
		"/xrpc/a/../b",
		"/xrpc/./com.atproto.server.describeServer",
		"/xrpc/com.atproto.server.describeServer/extra",
		"/xrpc/com.atproto.server.describeServer/",
		"/xrpc/..%2fx",
		"/xrpc/%2e%2e/x",
		"/xrpc/",
		"/xrpc/not_an_nsid",
		"/xrpc/com..atproto.x",
		"/xrpc/com.atproto.%00",
		"/xrpc/" + strings.Repeat("a.", 200) + "b",
	} {
		for _, m := range []string{"GET", "POST"} {
			for _, authz := range []string{"", "Authorization: Bearer " + access + "\r\n"} {
				req := m + " " + p + " HTTP/1.1\r\nHost: localhost\r\n" + authz + "Content-Length: 0\r\nConnection: close\r\n\r\n"
				st, out := s.rawExchange(t, req)
				what := m + " " + p
				if authz != "" {
					what += " with a session"
				}
				wantXRPCError(t, what, st, out, 400, "InvalidRequest", "invalid xrpc path")
			}
		}
		before = s.wantUnchanged(t, p, before, did)
	}
}

// TestQueryParamsChecked: every query parameter of a local method is held
// to its lexicon (required, type, format, range, length), answered 400
// InvalidRequest naming the parameter; nothing changes.
func TestQueryParamsChecked(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("x")})
	wantStatus(t, "createRecord", st, out, 200, "")
	before := s.snapshot(t, did)
	lr := "repo=" + did + "&collection=app.bsky.feed.post"
	for _, tc := range []struct {
		nsid, query, authz, msg string
	}{
		{"com.atproto.repo.listRecords", lr + "&reverse=maybe", "", "Params/reverse must be a boolean"},
		{"com.atproto.repo.listRecords", lr + "&reverse=1", "", "Params/reverse must be a boolean"},
		{"com.atproto.repo.listRecords", lr + "&limit=0", "", "Params/limit can not be less than 1"},
		{"com.atproto.repo.listRecords", lr + "&limit=101", "", "Params/limit can not be greater than 100"},
		{"com.atproto.repo.listRecords", lr + "&limit=ten", "", "Params/limit must be an integer"},
		{"com.atproto.repo.listRecords", lr + "&limit=5&limit=6", "", "Params/limit must be a single value"},
		{"com.atproto.repo.listRecords", "repo=" + did, "", `Params must have the property "collection"`},
		{"com.atproto.repo.listRecords", "collection=app.bsky.feed.post", "", `Params must have the property "repo"`},
		{"com.atproto.repo.listRecords", "repo=" + did + "&collection=not-an-nsid", "", "Params/collection must be a valid nsid"},
		{"com.atproto.repo.getRecord", "repo=" + did + "&collection=app.bsky.feed.post&rkey=x&cid=nope", "", "Params/cid must be a valid cid"},
		{"com.atproto.repo.getRecord", "repo=" + did + "&collection=app.bsky.feed.post", "", `Params must have the property "rkey"`},
		{"com.atproto.repo.describeRepo", "repo=not+an+identifier", "", "Params/repo must be a valid at-identifier"},
		{"com.atproto.repo.describeRepo", "repo=%zz", "", "Invalid query string"},
		{"com.atproto.sync.listBlobs", "did=" + did + "&since=not-a-tid", "", "Params/since must be a valid tid"},
		{"com.atproto.sync.listBlobs", "did=" + did + "&limit=1001", "", "Params/limit can not be greater than 1000"},
		{"com.atproto.sync.getBlocks", "did=" + did, "", `Params must have the property "cids"`},
		{"com.atproto.sync.getBlocks", "did=" + did + "&cids=", "", `Params must have the property "cids"`},
		{"com.atproto.sync.getBlocks", "did=" + did + "&cids=bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie&cids=nope", "", "Params/cids/1 must be a valid cid"},
		{"com.atproto.sync.getRepo", "did=" + did + "&since=yesterday", "", "Params/since must be a valid tid"},
		{"com.atproto.sync.getRepo", "did=alice.test", "", "Params/did must be a valid did"},
		{"com.atproto.sync.getLatestCommit", "", "", `Params must have the property "did"`},
		{"com.atproto.sync.getBlob", "did=" + did + "&cid=x", "", "Params/cid must be a valid cid"},
		{"com.atproto.sync.listRepos", "limit=0", "", "Params/limit can not be less than 1"},
		{"com.atproto.sync.getRepoStatus", "did=" + strings.Repeat("x", 10), "", "Params/did must be a valid did"},
		{"com.atproto.sync.subscribeRepos", "cursor=abc", "", "Params/cursor must be an integer"},
		{"com.atproto.server.getServiceAuth", "aud=not-a-did", "Bearer " + access, "aud"},
		{"com.atproto.server.getServiceAuth", "aud=did:web:" + strings.Repeat("x", 2048), "Bearer " + access, "Params/aud must not be longer than 2048 characters"},
		{"com.atproto.server.getServiceAuth", "aud=did:web:api.bsky.app&exp=soon", "Bearer " + access, "Params/exp must be an integer"},
		{"com.atproto.identity.resolveHandle", "handle=not_a_handle", "", "Params/handle must be a valid handle"},
		{"com.atproto.identity.resolveHandle", "", "", `Params must have the property "handle"`},
	} {
		what := tc.nsid + "?" + tc.query
		st, out, _ := s.send(t, rawReq{method: "GET", nsid: tc.nsid, query: tc.query, authz: tc.authz})
		wantXRPCError(t, what, st, out, 400, "InvalidRequest", tc.msg)
		// HEAD answers the same status (CDNs probe this way).
		if st, _, _ := s.send(t, rawReq{method: "HEAD", nsid: tc.nsid, query: tc.query, authz: tc.authz}); st != 400 {
			t.Errorf("HEAD %s: status %d, want 400", what, st)
		}
		before = s.wantUnchanged(t, what, before, did)
	}
	// The well-formed forms still work, an empty value counting as absent.
	for _, q := range []string{lr + "&reverse=true&limit=100", lr + "&cursor=", lr + "&reverse=false&limit=1"} {
		st, out, _ := s.send(t, rawReq{method: "GET", nsid: "com.atproto.repo.listRecords", query: q})
		wantStatus(t, "listRecords?"+q, st, out, 200, "")
	}
}

// oversizedExchange sends head and then body over one TCP connection,
// writing and reading at once as an HTTP client does, and returns the
// answer's status, envelope, whether it says the connection closes, and
// the error of writing the body (a reset connection shows up there).
func (s *testServer) oversizedExchange(t *testing.T, head string, body []byte) (int, map[string]any, bool, error) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	wrote := make(chan error, 1)
	go func() {
		if _, err := io.WriteString(conn, head); err != nil {
			wrote <- err
			return
		}
		for off := 0; off < len(body); off += 64 << 10 {
			end := min(off+64<<10, len(body))
			if _, err := conn.Write(body[off:end]); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer could be read: %v (write: %v)", err, <-wrote)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("non-JSON answer %d: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out, resp.Close, <-wrote
}

// TestPayloadTooLargeAnswered: an oversized body, declared or sent, gets a
// 413 PayloadTooLarge envelope the client can read, then the connection
// closes; a client that sends its whole body (up to several MB) is not
// reset while doing so. Nothing is written.
func TestPayloadTooLargeAnswered(t *testing.T) {
	s := startServerWith(t, map[string]string{"PDS_BLOB_UPLOAD_LIMIT": "100000"}, nil)
	did, access, _ := s.createAccount(t)
	before := s.snapshot(t, did)
	big := jsonBody(t, map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post(strings.Repeat("a", 1_200_000))})
	mid := jsonBody(t, map[string]any{"name": strings.Repeat("a", 200_000)})
	hdr := func(nsid, ctype, framing string) string {
		return "POST /xrpc/" + nsid + " HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + access + "\r\nContent-Type: " + ctype + "\r\n" + framing + "\r\n"
	}
	chunk := func(b []byte) []byte {
		return append([]byte(fmt.Sprintf("%x\r\n", len(b))), append(append([]byte{}, b...), []byte("\r\n0\r\n\r\n")...)...)
	}
	png := pngBytes(t, 1_500_000)
	huge := jsonBody(t, map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post(strings.Repeat("a", 6_000_000))})
	for _, tc := range []struct {
		name string
		head string
		body []byte
		// sentAll: the client sends its whole body and must not be reset.
		sentAll bool
	}{
		{"createRecord of 1.2 MB", hdr("com.atproto.repo.createRecord", "application/json", fmt.Sprintf("Content-Length: %d\r\n", len(big))), big, true},
		{"createRecord of 1.2 MB, chunked", hdr("com.atproto.repo.createRecord", "application/json", "Transfer-Encoding: chunked\r\n"), chunk(big), true},
		{"createAppPassword of 200 KB", hdr("com.atproto.server.createAppPassword", "application/json", fmt.Sprintf("Content-Length: %d\r\n", len(mid))), mid, true},
		{"uploadBlob of 1.5 MB", hdr("com.atproto.repo.uploadBlob", "image/png", fmt.Sprintf("Content-Length: %d\r\n", len(png))), png, true},
		{"uploadBlob of 1.5 MB, chunked", hdr("com.atproto.repo.uploadBlob", "image/png", "Transfer-Encoding: chunked\r\n"), chunk(png), true},
		{"createRecord of 6 MB", hdr("com.atproto.repo.createRecord", "application/json", fmt.Sprintf("Content-Length: %d\r\n", len(huge))), huge, true},
		{"uploadBlob of 6 MB, chunked", hdr("com.atproto.repo.uploadBlob", "image/png", "Transfer-Encoding: chunked\r\n"), chunk(huge), true},
		{"declared 50 MB, 100 KB sent", hdr("com.atproto.repo.createRecord", "application/json", "Content-Length: 50000000\r\n"), big[:100_000], false},
		{"declared 50 MB blob, nothing sent", hdr("com.atproto.repo.uploadBlob", "image/png", "Content-Length: 50000000\r\n"), nil, false},
	} {
		st, out, closing, werr := s.oversizedExchange(t, tc.head, tc.body)
		wantXRPCError(t, tc.name, st, out, 413, "PayloadTooLarge", "")
		if !closing {
			t.Errorf("%s: the answer does not say Connection: close", tc.name)
		}
		if tc.sentAll && werr != nil {
			t.Errorf("%s: the client was cut off while sending: %v", tc.name, werr)
		}
		before = s.wantUnchanged(t, tc.name, before, did)
	}
}

// TestContentEncodingAccepted: gzip and deflate bodies, as the reference
// takes them, are decoded before use: a gzip createRecord writes the
// record, and a gzip upload stores the decoded bytes (the CID of the
// image, not of its compression).
func TestContentEncodingAccepted(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	body := jsonBody(t, map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("compressed")})
	for _, coding := range []string{"gzip", "x-gzip", "identity", "gzip, identity"} {
		st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.createRecord", authz: bearerAuth(access), contentType: "application/json",
			body: gzipBytes(t, body), headers: map[string]string{"Content-Encoding": coding}})
		if coding == "identity" {
			wantXRPCError(t, "gzip bytes said to be identity", st, out, 400, "InvalidRequest", "")
			continue
		}
		wantStatus(t, "createRecord with Content-Encoding "+coding, st, out, 200, "")
	}
	var zbuf bytes.Buffer
	zw := zlib.NewWriter(&zbuf)
	_, _ = zw.Write(body)
	_ = zw.Close()
	st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.createRecord", authz: bearerAuth(access), contentType: "application/json",
		body: zbuf.Bytes(), headers: map[string]string{"Content-Encoding": "deflate"}})
	wantStatus(t, "createRecord with Content-Encoding deflate", st, out, 200, "")

	img := pngBytes(t, 4000)
	st, plain, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: bearerAuth(access), contentType: "image/png", body: img})
	wantStatus(t, "uploadBlob", st, plain, 200, "")
	st, zipped, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: bearerAuth(access), contentType: "image/png",
		body: gzipBytes(t, img), headers: map[string]string{"Content-Encoding": "gzip"}})
	wantStatus(t, "uploadBlob gzip", st, zipped, 200, "")
	a, _ := json.Marshal(plain["blob"])
	b, _ := json.Marshal(zipped["blob"])
	if string(a) != string(b) {
		t.Fatalf("the gzip upload stored other bytes: %s, plain %s", b, a)
	}
}
