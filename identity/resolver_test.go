package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/internal/testpds"
)

// resDNS is a fake TXT resolver: records by name; "slow" names block until
// the context ends.
type resDNS struct {
	txt  map[string][]string
	slow map[string]bool
}

func (d resDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if d.slow[name] {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if v, ok := d.txt[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// resWeb serves well-known files and did.json documents by path, counting
// requests; a path with no entry is 404.
type resWeb struct {
	srv  *httptest.Server
	mu   sync.Mutex
	body map[string]string
	code map[string]int
	hits map[string]int
	hang map[string]bool
}

func newResWeb(t *testing.T) *resWeb {
	w := &resWeb{body: map[string]string{}, code: map[string]int{}, hits: map[string]int{}, hang: map[string]bool{}}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.hits[r.URL.Path]++
		body, ok := w.body[r.URL.Path]
		code, hang := w.code[r.URL.Path], w.hang[r.URL.Path]
		w.mu.Unlock()
		if hang {
			<-r.Context().Done()
			return
		}
		if !ok {
			http.NotFound(rw, r)
			return
		}
		if code != 0 {
			rw.WriteHeader(code)
		}
		_, _ = rw.Write([]byte(body))
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *resWeb) set(path, body string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.body[path] = body
}

func (w *resWeb) count(path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[path]
}

// resolver returns a Resolver whose every lookup stays on 127.0.0.1.
func (w *resWeb) resolver(dns identity.TXTResolver) *identity.Resolver {
	return &identity.Resolver{
		HTTP:         w.srv.Client(),
		DNS:          dns,
		WellKnownURL: func(h syntax.Handle) string { return w.srv.URL + "/wk/" + h.String() },
		DIDWebURL:    func(host string) string { return w.srv.URL + "/did/" + host },
	}
}

const (
	resDID1 = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	resDID2 = "did:plc:ragtjsm2j2vknwkz3zp4oxrd"
)

func TestResolveHandleDNS(t *testing.T) {
	web := newResWeb(t) // no well-known files: DNS alone decides
	dns := resDNS{txt: map[string][]string{
		"_atproto.one.test":      {"did=" + resDID1},
		"_atproto.mixed.test":    {"v=spf1 -all", "did=" + resDID1, "hello"},
		"_atproto.spaced.test":   {"did= " + resDID1 + " "},
		"_atproto.none.test":     {"v=spf1 -all"},
		"_atproto.empty.test":    {},
		"_atproto.two.test":      {"did=" + resDID1, "did=" + resDID2},
		"_atproto.twosame.test":  {"did=" + resDID1, "did=" + resDID1},
		"_atproto.bad.test":      {"did=not-a-did"},
		"_atproto.prefix.test":   {"xdid=" + resDID1},
		"_atproto.upper.test":    {"did=" + resDID2},
		"_atproto.subdomain.one": {"did=" + resDID2},
	}}
	r := web.resolver(dns)
	cases := []struct {
		handle string
		want   string // "" for an error
	}{
		{"one.test", resDID1},
		{"mixed.test", resDID1},
		{"spaced.test", resDID1},
		{"UPPER.test", resDID2},
		{"none.test", ""},
		{"empty.test", ""},
		{"two.test", ""},
		{"twosame.test", ""},
		{"bad.test", ""},
		{"prefix.test", ""},
		{"missing.test", ""},
	}
	for _, tc := range cases {
		t.Run(tc.handle, func(t *testing.T) {
			did, err := r.ResolveHandle(context.Background(), syntax.Handle(tc.handle))
			if tc.want == "" {
				if err == nil || !errors.Is(err, identity.ErrHandleNotFound) {
					t.Fatalf("got %s, %v; want ErrHandleNotFound", did, err)
				}
				return
			}
			if err != nil || did.String() != tc.want {
				t.Fatalf("got %s, %v; want %s", did, err, tc.want)
			}
		})
	}
}

func TestResolveHandleWellKnown(t *testing.T) {
	web := newResWeb(t)
	pad := strings.Repeat("x", 2048)
	files := map[string]string{
		"plain.test":    resDID1,
		"newline.test":  resDID1 + "\n",
		"crlf.test":     resDID1 + "\r\n",
		"spaces.test":   "  " + resDID1 + "  \nsecond line\n",
		"first.test":    resDID1 + "\n" + resDID2 + "\n",
		"limit.test":    (resDID1 + "\n" + pad)[:2048],
		"toolong.test":  resDID1 + "\n" + pad,
		"empty.test":    "",
		"notadid.test":  "hello world\n",
		"secondln.test": "\n" + resDID1,
		"both.test":     resDID2,
	}
	for h, body := range files {
		web.set("/wk/"+h, body)
	}
	web.mu.Lock()
	web.body["/wk/error.test"], web.code["/wk/error.test"] = resDID1, 500
	web.body["/wk/notfound.test"], web.code["/wk/notfound.test"] = resDID1, 404
	web.mu.Unlock()
	// A handle with both: DNS wins.
	r := web.resolver(resDNS{txt: map[string][]string{"_atproto.both.test": {"did=" + resDID1}}})
	cases := []struct{ handle, want string }{
		{"plain.test", resDID1},
		{"newline.test", resDID1},
		{"crlf.test", resDID1},
		{"spaces.test", resDID1},
		{"first.test", resDID1},
		{"limit.test", resDID1},
		{"toolong.test", ""},
		{"empty.test", ""},
		{"notadid.test", ""},
		{"secondln.test", ""},
		{"error.test", ""},
		{"notfound.test", ""},
		{"absent.test", ""},
		{"both.test", resDID1},
	}
	for _, tc := range cases {
		t.Run(tc.handle, func(t *testing.T) {
			did, err := r.ResolveHandle(context.Background(), syntax.Handle(tc.handle))
			if tc.want == "" {
				if !errors.Is(err, identity.ErrHandleNotFound) {
					t.Fatalf("got %s, %v; want ErrHandleNotFound", did, err)
				}
				return
			}
			if err != nil || did.String() != tc.want {
				t.Fatalf("got %s, %v; want %s", did, err, tc.want)
			}
		})
	}
}

// TestResolveHandleTimeout: a DNS server and a web server that never answer
// do not hold the caller past its deadline.
func TestResolveHandleTimeout(t *testing.T) {
	web := newResWeb(t)
	web.mu.Lock()
	web.hang["/wk/slow.test"] = true
	web.mu.Unlock()
	r := web.resolver(resDNS{slow: map[string]bool{"_atproto.slow.test": true}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.ResolveHandle(ctx, "slow.test")
	if !errors.Is(err, identity.ErrHandleNotFound) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func resKey(t *testing.T) atcrypto.PrivateKey {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func resPub(t *testing.T, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	p, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// resDoc is a did:web document with an #atproto key and services.
func resDoc(did string, key atcrypto.PublicKey, services map[string]string) string {
	var svcs []map[string]string
	for id, ep := range services {
		svcs = append(svcs, map[string]string{"id": "#" + id, "type": "Svc", "serviceEndpoint": ep})
	}
	b, _ := json.Marshal(map[string]any{
		"id": did,
		"verificationMethod": []map[string]string{{
			"id": did + "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": key.Multibase(),
		}},
		"service": svcs,
	})
	return string(b)
}

func TestResolveDIDWeb(t *testing.T) {
	ctx := context.Background()
	web := newResWeb(t)
	r := web.resolver(resDNS{})
	r.TTL = 500 * time.Millisecond
	k1, k2 := resKey(t), resKey(t)
	const did = "did:web:svc.test"
	const path = "/did/svc.test"
	web.set(path, resDoc(did, resPub(t, k1), map[string]string{"bsky_chat": "https://chat.example"}))

	steps := []struct {
		name      string
		refresh   bool
		wait      time.Duration
		newDoc    string
		wantHits  int
		wantKey   atcrypto.PrivateKey
		wantChat  string
		wantError bool
	}{
		{name: "first lookup fetches", wantHits: 1, wantKey: k1, wantChat: "https://chat.example"},
		{name: "cached", wantHits: 1, wantKey: k1, wantChat: "https://chat.example"},
		{name: "changed document, still cached", newDoc: resDoc(did, resPub(t, k2), map[string]string{"bsky_chat": "https://chat2.example"}), wantHits: 1, wantKey: k1, wantChat: "https://chat.example"},
		{name: "refresh fetches again", refresh: true, wantHits: 2, wantKey: k2, wantChat: "https://chat2.example"},
		{name: "cached after refresh", wantHits: 2, wantKey: k2, wantChat: "https://chat2.example"},
		{name: "expired entry fetches again", wait: 600 * time.Millisecond, wantHits: 3, wantKey: k2, wantChat: "https://chat2.example"},
		{name: "a document for another DID", refresh: true, newDoc: resDoc("did:web:other.test", resPub(t, k1), nil), wantHits: 4, wantError: true},
		{name: "not JSON", refresh: true, newDoc: "<html>", wantHits: 5, wantError: true},
		{name: "too large", refresh: true, newDoc: `{"id":"` + did + `","x":"` + strings.Repeat("a", 300<<10) + `"}`, wantHits: 6, wantError: true},
		{name: "failed refreshes keep the last good document", wantHits: 6, wantKey: k2, wantChat: "https://chat2.example"},
		{name: "expired again: the new document", wait: 600 * time.Millisecond, newDoc: resDoc(did, resPub(t, k1), map[string]string{"bsky_chat": "https://chat3.example"}), wantHits: 7, wantKey: k1, wantChat: "https://chat3.example"},
	}
	for _, st := range steps {
		if st.newDoc != "" {
			web.set(path, st.newDoc)
		}
		time.Sleep(st.wait)
		id, err := r.ResolveDID(ctx, did, st.refresh)
		if got := web.count(path); got != st.wantHits {
			t.Fatalf("%s: %d fetches, want %d", st.name, got, st.wantHits)
		}
		if st.wantError {
			if err == nil {
				t.Fatalf("%s: no error", st.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		k, err := id.PublicKey()
		if err != nil || !k.Equal(resPub(t, st.wantKey)) {
			t.Fatalf("%s: key %v, %v", st.name, k, err)
		}
		if u, err := r.ServiceEndpoint(ctx, did, "bsky_chat"); err != nil || u != st.wantChat {
			t.Fatalf("%s: endpoint %q, %v", st.name, u, err)
		}
	}
	if _, err := r.ServiceEndpoint(ctx, did, "bsky_notif"); !errors.Is(err, identity.ErrServiceNotFound) {
		t.Fatalf("missing service: %v", err)
	}
	// A failed lookup is not remembered: once published, the document is
	// found without a refresh.
	if _, err := r.ResolveDID(ctx, "did:web:late.test", false); err == nil {
		t.Fatal("an unpublished document resolved")
	}
	web.set("/did/late.test", resDoc("did:web:late.test", resPub(t, k1), nil))
	if _, err := r.ResolveDID(ctx, "did:web:late.test", false); err != nil {
		t.Fatalf("published document: %v", err)
	}
	for _, bad := range []syntax.DID{"did:web:localhost%3A8080", "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "did:web:absent.test"} {
		before := web.count("/did/localhost%3A8080")
		if _, err := r.ResolveDID(ctx, bad, false); err == nil {
			t.Fatalf("%s resolved", bad)
		}
		if web.count("/did/localhost%3A8080") != before {
			t.Fatalf("%s: a did:web with a port was fetched", bad)
		}
	}
}

// TestResolveDIDPLC: did:plc through the directory, cached, and the key
// rotation a service-auth check recovers from with refresh.
func TestResolveDIDPLC(t *testing.T) {
	ctx := context.Background()
	plc := testpds.NewMockPLC(t)
	client := &identity.PLCClient{URL: plc.URL, HTTP: plc.Client()}
	rot, k1, k2 := resKey(t), resKey(t), resKey(t)
	did, op, err := identity.PLCGenesis(rot, resPub(t, k1), "carol.test", "https://pds.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Submit(ctx, did, op); err != nil {
		t.Fatal(err)
	}
	r := &identity.Resolver{PLC: client, HTTP: plc.Client()}
	id, err := r.ResolveDID(ctx, did, false)
	if err != nil || id.PDSEndpoint() != "https://pds.example" {
		t.Fatalf("resolve: %v %v", id, err)
	}
	if u, err := r.ServiceEndpoint(ctx, did, "atproto_pds"); err != nil || u != "https://pds.example" {
		t.Fatalf("endpoint %q %v", u, err)
	}

	// Rotate the signing key in the directory.
	last, err := client.LastOp(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	prev := last.CID().String()
	next := *last
	next.Prev, next.Sig = &prev, nil
	next.VerificationMethods = map[string]string{"atproto": resPub(t, k2).DIDKey()}
	if err := next.Sign(rot); err != nil {
		t.Fatal(err)
	}
	if err := client.Submit(ctx, did, &next); err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		refresh bool
		want    atcrypto.PrivateKey
	}{{false, k1}, {true, k2}, {false, k2}} {
		k, err := r.SigningKey(ctx, did, st.refresh)
		if err != nil || !k.Equal(resPub(t, st.want)) {
			t.Fatalf("refresh=%v: key %v, %v", st.refresh, k, err)
		}
	}
	if _, err := r.ResolveDID(ctx, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", false); err == nil {
		t.Fatal("an unknown did:plc resolved")
	}
}
