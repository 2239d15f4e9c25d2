package identity_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsbox/pds/identity"
)

func TestPublicAddr(t *testing.T) {
	cases := []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"147.75.0.1", true},
		{"2606:4700:4700::1111", true},
		{"2a01:4f8::1", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"fe80::1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"100.64.0.1", false},
		{"100.127.255.254", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"ff02::1", false},
		{"ff0e::1", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"192.0.2.1", false},
		{"198.51.100.7", false},
		{"203.0.113.9", false},
		{"198.18.0.1", false},
		{"192.0.0.8", false},
		{"2001:db8::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::a00:1", false},
		{"172.15.255.255", true},
		{"172.32.0.1", true},
		{"100.63.255.255", true},
		{"100.128.0.1", true},
	}
	for _, tc := range cases {
		if got := identity.PublicAddr(netip.MustParseAddr(tc.addr)); got != tc.public {
			t.Errorf("PublicAddr(%s) = %v, want %v", tc.addr, got, tc.public)
		}
	}
	if identity.PublicAddr(netip.Addr{}) {
		t.Error("the zero address is public")
	}
}

func TestCheckTarget(t *testing.T) {
	cases := []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://api.bsky.app", false, true},
		{"https://8.8.8.8/xrpc", false, true},
		{"https://[2606:4700::1111]:8443", false, true},
		{"https://localhost:8443", false, true}, // a name: checked at dial time
		{"http://api.bsky.app", false, false},
		{"ftp://api.bsky.app", false, false},
		{"//api.bsky.app", false, false},
		{"https://127.0.0.1:8443", false, false},
		{"https://10.1.2.3", false, false},
		{"https://192.168.1.1", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
		{"https://[::1]:8443", false, false},
		{"https://[fe80::1]:8443", false, false},
		{"https://[::ffff:127.0.0.1]", false, false},
		{"https://0.0.0.0", false, false},
		{"https://[::]", false, false},
		{"http://127.0.0.1:8080", true, true},
		{"https://10.1.2.3", true, true},
		{"ftp://127.0.0.1", true, false},
		{"file:///etc/passwd", true, false},
		{"://bad", false, false},
	}
	for _, tc := range cases {
		err := identity.CheckTarget(context.Background(), tc.url, tc.allowPrivate)
		if (err == nil) != tc.ok {
			t.Errorf("CheckTarget(%q, %v) = %v, want ok %v", tc.url, tc.allowPrivate, err, tc.ok)
		}
		if err != nil && !errors.Is(err, identity.ErrForbiddenTarget) {
			t.Errorf("CheckTarget(%q): %v does not wrap ErrForbiddenTarget", tc.url, err)
		}
	}
}

// TestSafeClient: the guarded client refuses plain http and every
// non-public address, literal or resolved, before connecting: a listener on
// 127.0.0.1 sees no connection, and private addresses with nothing behind
// them are refused at once rather than timing out.
func TestSafeClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	client := identity.NewSafeClient(5*time.Second, false)
	for _, u := range []string{
		"http://127.0.0.1:" + port + "/",
		"https://127.0.0.1:" + port + "/",
		"https://localhost:" + port + "/",
		"https://[::ffff:127.0.0.1]:" + port + "/",
		"https://0.0.0.0:" + port + "/",
		"http://example.com/",
		"https://10.1.2.3/",
		"https://172.16.5.4:8443/",
		"https://192.168.1.1/",
		"https://169.254.169.254/latest/meta-data",
		"https://100.64.0.1/",
		"https://[::1]:" + port + "/",
		"https://[fe80::1]:443/",
		"https://[fd00::1]:443/",
	} {
		start := time.Now()
		resp, err := client.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: fetched", u)
		}
		if !errors.Is(err, identity.ErrForbiddenTarget) {
			t.Fatalf("%s: %v, want ErrForbiddenTarget", u, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s: refused after %v, not before connecting", u, d)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener accepted %d connections", n)
	}

	// The explicit allowance reaches 127.0.0.1 over plain http.
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("did:plc:ewvi7nxzyoun6zhxrhs64oiz"))
	}))
	defer srv.Close()
	resp, err := identity.NewSafeClient(5*time.Second, true).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || hits.Load() != 1 {
		t.Fatalf("allowed client: %s", resp.Status)
	}

	// A resolver without a client uses the guarded one: a well-known file
	// or did.json on 127.0.0.1 is not fetched.
	r := &identity.Resolver{
		DNS:          resDNS{},
		WellKnownURL: func(syntax.Handle) string { return srv.URL + "/.well-known/atproto-did" },
		DIDWebURL:    func(string) string { return srv.URL + "/.well-known/did.json" },
	}
	if _, err := r.ResolveHandle(context.Background(), "alice.test"); !errors.Is(err, identity.ErrHandleNotFound) {
		t.Fatalf("handle: %v", err)
	}
	if _, err := r.ResolveDID(context.Background(), "did:web:alice.test", false); !errors.Is(err, identity.ErrForbiddenTarget) {
		t.Fatalf("did:web: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("the guarded resolver reached 127.0.0.1 (%d requests)", hits.Load())
	}
}
