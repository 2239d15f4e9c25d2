package main

import (
	"bufio"
	"encoding/json"
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
