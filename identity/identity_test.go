package identity_test

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	atid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"

	"github.com/pdsbox/pds/identity"
)

func k256(t *testing.T) *atcrypto.PrivateKeyK256 {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(t *testing.T, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	p, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// parseDoc decodes a DID document (as JSON-able value) the way other atproto
// services do, with indigo.
func parseDoc(t *testing.T, doc any) atid.Identity {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var d atid.DIDDocument
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return atid.ParseIdentity(&d)
}

func checkIdentity(t *testing.T, id atid.Identity, did syntax.DID, handle string, key atcrypto.PublicKey, endpoint string) {
	t.Helper()
	if id.DID != did {
		t.Errorf("DID = %s, want %s", id.DID, did)
	}
	if got := id.PDSEndpoint(); got != endpoint {
		t.Errorf("PDS endpoint = %q, want %q", got, endpoint)
	}
	if h, err := id.DeclaredHandle(); err != nil || h.String() != handle {
		t.Errorf("handle = %q, %v; want %q", h, err, handle)
	}
	k, err := id.PublicKey()
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	if !k.Equal(key) {
		t.Errorf("public key %s, want %s", k.DIDKey(), key.DIDKey())
	}
}

func TestPLCGenesis(t *testing.T) {
	signing := k256(t)
	rotations := []struct {
		name string
		key  atcrypto.PrivateKey
	}{
		{"k256 rotation key", k256(t)},
		{"p256 rotation key", func() atcrypto.PrivateKey {
			k, err := atcrypto.GeneratePrivateKeyP256()
			if err != nil {
				t.Fatal(err)
			}
			return k
		}()},
	}
	for _, rc := range rotations {
		t.Run(rc.name, func(t *testing.T) {
			rot := rc.key
			did, op, err := identity.PLCGenesis(rot, pub(t, signing), "Alice.Example.COM", "https://pds.example.com/")
			if err != nil {
				t.Fatal(err)
			}

			// The DID is go-didplc's own computation, and the spec's:
			// base32(sha256(dag-cbor(signed op)))[:24].
			own, err := op.DID()
			if err != nil || own != did.String() {
				t.Fatalf("didplc DID = %q, %v; PLCGenesis gave %s", own, err, did)
			}
			sum := sha256.Sum256(op.SignedCBORBytes())
			if want := "did:plc:" + strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])[:24]); did.String() != want {
				t.Errorf("DID = %s, want %s", did, want)
			}

			if err := op.VerifySignature(pub(t, rot)); err != nil {
				t.Errorf("signature does not verify with the rotation key: %v", err)
			}
			if err := op.VerifySignature(pub(t, signing)); !errors.Is(err, atcrypto.ErrInvalidSignature) {
				t.Errorf("signature verifies with the signing key: %v", err)
			}
			if _, err := didplc.VerifySignatureAny(op, op.RotationKeys); err != nil {
				t.Errorf("VerifySignatureAny: %v", err)
			}

			if op.Type != "plc_operation" || !op.IsGenesis() || op.Prev != nil {
				t.Errorf("type %q prev %v", op.Type, op.Prev)
			}
			if len(op.RotationKeys) != 1 || op.RotationKeys[0] != pub(t, rot).DIDKey() {
				t.Errorf("rotationKeys = %v", op.RotationKeys)
			}
			if len(op.VerificationMethods) != 1 || op.VerificationMethods["atproto"] != pub(t, signing).DIDKey() {
				t.Errorf("verificationMethods = %v", op.VerificationMethods)
			}
			if len(op.AlsoKnownAs) != 1 || op.AlsoKnownAs[0] != "at://alice.example.com" {
				t.Errorf("alsoKnownAs = %v", op.AlsoKnownAs)
			}
			wantSvc := didplc.OpService{Type: "AtprotoPersonalDataServer", Endpoint: "https://pds.example.com"}
			if len(op.Services) != 1 || op.Services["atproto_pds"] != wantSvc {
				t.Errorf("services = %v", op.Services)
			}

			// On the wire, prev is an explicit null.
			b, err := json.Marshal(op)
			if err != nil {
				t.Fatal(err)
			}
			var wire map[string]any
			if err := json.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			if v, ok := wire["prev"]; !ok || v != nil {
				t.Errorf("prev on the wire = %v (present %v)", v, ok)
			}

			doc, err := op.Doc(did.String())
			if err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, parseDoc(t, doc), did, "alice.example.com", pub(t, signing), "https://pds.example.com")
		})
	}

	t.Run("same content as didplc.NewAtproto", func(t *testing.T) {
		k := k256(t)
		_, op, err := identity.PLCGenesis(k, pub(t, k), "bob.test", "https://pds.test")
		if err != nil {
			t.Fatal(err)
		}
		ref, err := didplc.NewAtproto(k, "bob.test", "https://pds.test", []string{pub(t, k).DIDKey()})
		if err != nil {
			t.Fatal(err)
		}
		ref.Type = "plc_operation" // NewAtproto leaves the type empty
		if string(op.UnsignedCBORBytes()) != string(ref.UnsignedCBORBytes()) {
			t.Error("unsigned operation differs from didplc.NewAtproto's")
		}
	})

	errTests := []struct {
		name     string
		handle   syntax.Handle
		endpoint string
		want     error
	}{
		{"bad handle", "not a handle", "https://pds.test", identity.ErrInvalidHandle},
		{"empty endpoint", "bob.test", "", identity.ErrInvalidEndpoint},
		{"no scheme", "bob.test", "pds.test", identity.ErrInvalidEndpoint},
		{"ftp", "bob.test", "ftp://pds.test", identity.ErrInvalidEndpoint},
		{"query", "bob.test", "https://pds.test/?x=1", identity.ErrInvalidEndpoint},
		{"user info", "bob.test", "https://u:p@pds.test", identity.ErrInvalidEndpoint},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			k := k256(t)
			if _, _, err := identity.PLCGenesis(k, pub(t, k), tt.handle, tt.endpoint); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// mockPLC is a PLC directory on 127.0.0.1 that accepts valid genesis
// operations and serves their documents.
type mockPLC struct {
	t   *testing.T
	srv *httptest.Server
	mu  sync.Mutex
	ops map[string]*didplc.RegularOp
	// fail, if set, answers every request with this status and body.
	failStatus int
	failBody   string
}

func newMockPLC(t *testing.T) *mockPLC {
	m := &mockPLC{t: t, ops: map[string]*didplc.RegularOp{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	if !strings.HasPrefix(m.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("mock PLC not on 127.0.0.1: %s", m.srv.URL)
	}
	return m
}

func (m *mockPLC) client() *identity.PLCClient {
	return &identity.PLCClient{URL: m.srv.URL, HTTP: m.srv.Client()}
}

func plcError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (m *mockPLC) serve(w http.ResponseWriter, r *http.Request) {
	if m.failStatus != 0 {
		w.WriteHeader(m.failStatus)
		_, _ = io.WriteString(w, m.failBody)
		return
	}
	did := strings.TrimPrefix(r.URL.Path, "/")
	switch r.Method {
	case http.MethodPost:
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			plcError(w, http.StatusBadRequest, "content-type "+ct)
			return
		}
		var op didplc.RegularOp
		if err := json.NewDecoder(r.Body).Decode(&op); err != nil {
			plcError(w, http.StatusBadRequest, "bad json: "+err.Error())
			return
		}
		if len(op.RotationKeys) == 0 {
			plcError(w, http.StatusBadRequest, "no rotation keys")
			return
		}
		if _, err := didplc.VerifySignatureAny(&op, op.RotationKeys); err != nil {
			plcError(w, http.StatusBadRequest, "Invalid signature on op")
			return
		}
		computed, err := op.DID()
		if err != nil || computed != did {
			plcError(w, http.StatusBadRequest, "Hash of genesis operation does not match DID identifier: "+computed)
			return
		}
		m.mu.Lock()
		m.ops[did] = &op
		m.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		m.mu.Lock()
		op := m.ops[did]
		m.mu.Unlock()
		if op == nil {
			plcError(w, http.StatusNotFound, "DID not registered: "+did)
			return
		}
		doc, err := op.Doc(did)
		if err != nil {
			plcError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/did+ld+json")
		_ = json.NewEncoder(w).Encode(doc)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func TestPLCClientSubmitAndResolve(t *testing.T) {
	ctx := context.Background()
	m := newMockPLC(t)
	c := m.client()
	rot, signing := k256(t), k256(t)
	did, op, err := identity.PLCGenesis(rot, pub(t, signing), "carol.test", "https://pds.test")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Resolve(ctx, did); !errors.Is(err, identity.ErrDIDNotFound) {
		t.Errorf("Resolve before submit: %v, want ErrDIDNotFound", err)
	}
	if err := c.Submit(ctx, did, op); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	m.mu.Lock()
	stored := m.ops[did.String()]
	m.mu.Unlock()
	if stored == nil || stored.CID() != op.CID() {
		t.Fatal("mock did not store the submitted operation unchanged")
	}

	doc, err := c.Resolve(ctx, did)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	checkIdentity(t, parseDoc(t, doc), did, "carol.test", pub(t, signing), "https://pds.test")

	// A trailing slash on the directory URL is harmless.
	c2 := &identity.PLCClient{URL: m.srv.URL + "/", HTTP: m.srv.Client()}
	if _, err := c2.Resolve(ctx, did); err != nil {
		t.Errorf("Resolve with trailing slash: %v", err)
	}
}

func TestPLCClientErrors(t *testing.T) {
	ctx := context.Background()
	rot := k256(t)
	did, op, err := identity.PLCGenesis(rot, pub(t, rot), "dave.test", "https://pds.test")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := identity.PLCGenesis(rot, pub(t, rot), "erin.test", "https://pds.test")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("wrong DID path is rejected with the directory's message", func(t *testing.T) {
		m := newMockPLC(t)
		err := m.client().Submit(ctx, other, op)
		var pe *identity.PLCError
		if !errors.As(err, &pe) || pe.StatusCode != http.StatusBadRequest {
			t.Fatalf("err = %v, want *PLCError 400", err)
		}
		if !strings.HasPrefix(pe.Message, "Hash of genesis operation does not match") {
			t.Errorf("message = %q", pe.Message)
		}
		if !errors.Is(err, identity.ErrPLC) || errors.Is(err, identity.ErrDIDNotFound) {
			t.Errorf("errors.Is mapping wrong for %v", err)
		}
	})

	t.Run("tampered operation is rejected", func(t *testing.T) {
		m := newMockPLC(t)
		bad := *op
		bad.AlsoKnownAs = []string{"at://mallory.test"}
		err := m.client().Submit(ctx, did, &bad)
		var pe *identity.PLCError
		if !errors.As(err, &pe) || pe.StatusCode != 400 || pe.Message != "Invalid signature on op" {
			t.Fatalf("err = %v", err)
		}
	})

	statusTests := []struct {
		name        string
		status      int
		body        string
		wantMsg     string
		wantMissing bool
	}{
		{"400 json", 400, `{"message":"Operations are too frequent"}`, "Operations are too frequent", false},
		{"400 json error field", 400, `{"error":"InvalidRequest"}`, "InvalidRequest", false},
		{"500 text", 500, "upstream exploded\n", "upstream exploded", false},
		{"502 empty", 502, "", "Bad Gateway", false},
		{"404", 404, `{"message":"DID not registered"}`, "DID not registered", true},
		{"410 tombstoned", 410, `{"message":"DID not available"}`, "DID not available", true},
	}
	for _, tt := range statusTests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMockPLC(t)
			m.failStatus, m.failBody = tt.status, tt.body
			for name, err := range map[string]error{
				"submit":  m.client().Submit(ctx, did, op),
				"resolve": func() error { _, err := m.client().Resolve(ctx, did); return err }(),
			} {
				var pe *identity.PLCError
				if !errors.As(err, &pe) {
					t.Fatalf("%s: err = %v, want *PLCError", name, err)
				}
				if pe.StatusCode != tt.status || pe.Message != tt.wantMsg {
					t.Errorf("%s: %+v, want %d %q", name, pe, tt.status, tt.wantMsg)
				}
				if !errors.Is(err, identity.ErrPLC) {
					t.Errorf("%s: not ErrPLC", name)
				}
				if errors.Is(err, identity.ErrDIDNotFound) != tt.wantMissing {
					t.Errorf("%s: ErrDIDNotFound = %v, want %v", name, !tt.wantMissing, tt.wantMissing)
				}
			}
		})
	}

	t.Run("timeout", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Reading the body lets the server notice the client hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		defer srv.Close()
		hc := srv.Client()
		hc.Timeout = 50 * time.Millisecond
		c := &identity.PLCClient{URL: srv.URL, HTTP: hc}
		start := time.Now()
		if err := c.Submit(ctx, did, op); !errors.Is(err, identity.ErrPLC) {
			t.Errorf("err = %v, want ErrPLC", err)
		}
		if time.Since(start) > 3*time.Second {
			t.Error("timeout not applied")
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c := &identity.PLCClient{URL: url}
		if err := c.Submit(ctx, did, op); !errors.Is(err, identity.ErrPLC) {
			t.Errorf("err = %v, want ErrPLC", err)
		}
	})

	t.Run("document for another DID", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"id": other.String()})
		}))
		defer srv.Close()
		c := &identity.PLCClient{URL: srv.URL, HTTP: srv.Client()}
		if _, err := c.Resolve(ctx, did); !errors.Is(err, identity.ErrPLC) {
			t.Errorf("err = %v, want ErrPLC", err)
		}
	})

	t.Run("local checks", func(t *testing.T) {
		c := &identity.PLCClient{URL: "http://127.0.0.1:1"}
		if err := c.Submit(ctx, "did:web:example.com", op); !errors.Is(err, identity.ErrInvalidDID) {
			t.Errorf("did:web submit: %v", err)
		}
		unsigned := *op
		unsigned.Sig = nil
		if err := c.Submit(ctx, did, &unsigned); !errors.Is(err, identity.ErrInvalidDID) {
			t.Errorf("unsigned submit: %v", err)
		}
		if _, err := c.Resolve(ctx, "did:web:example.com"); !errors.Is(err, identity.ErrInvalidDID) {
			t.Errorf("did:web resolve: %v", err)
		}
		if err := (&identity.PLCClient{}).Submit(ctx, did, op); !errors.Is(err, identity.ErrPLC) {
			t.Errorf("no URL: %v", err)
		}
	})
}

func TestDIDWeb(t *testing.T) {
	tests := []struct {
		host string
		want string
	}{
		{"example.com", "did:web:example.com"},
		{"PDS.Example.com", "did:web:pds.example.com"},
		{"localhost", "did:web:localhost"},
		{"my-pds.example.co.uk", "did:web:my-pds.example.co.uk"},
		{"", ""},
		{"example.com:8080", ""},
		{"https://example.com", ""},
		{"example.com/path", ""},
		{"127.0.0.1", ""},
		{"-bad.example.com", ""},
		{"bad-.example.com", ""},
		{"a..example.com", ""},
		{"example.com.", ""},
		{"exa_mple.com", ""},
		{strings.Repeat("a", 64) + ".com", ""},
		{"[::1]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, err := identity.DIDWeb(tt.host)
			if tt.want == "" {
				if !errors.Is(err, identity.ErrInvalidHostname) {
					t.Errorf("DIDWeb(%q) = %q, %v; want ErrInvalidHostname", tt.host, got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("DIDWeb(%q) = %q, %v; want %q", tt.host, got, err, tt.want)
			}
		})
	}
}

func TestDIDWebDocument(t *testing.T) {
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]atcrypto.PublicKey{"k256": pub(t, k256(t)), "p256": pub(t, p256)} {
		t.Run(name, func(t *testing.T) {
			did, err := identity.DIDWeb("pds.example.com")
			if err != nil {
				t.Fatal(err)
			}
			doc := identity.DIDWebDocument(did, "Alice.Example.com", key, "https://pds.example.com/")
			checkIdentity(t, parseDoc(t, doc), did, "alice.example.com", key, "https://pds.example.com")

			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var raw struct {
				Context            []string `json:"@context"`
				VerificationMethod []struct {
					ID   string `json:"id"`
					Type string `json:"type"`
				} `json:"verificationMethod"`
				Service []struct {
					ID string `json:"id"`
				} `json:"service"`
			}
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			wantCtx := []string{
				"https://www.w3.org/ns/did/v1",
				"https://w3id.org/security/multikey/v1",
				"https://w3id.org/security/suites/secp256k1-2019/v1",
			}
			if strings.Join(raw.Context, " ") != strings.Join(wantCtx, " ") {
				t.Errorf("@context = %v", raw.Context)
			}
			if len(raw.VerificationMethod) != 1 || raw.VerificationMethod[0].ID != "did:web:pds.example.com#atproto" ||
				raw.VerificationMethod[0].Type != "Multikey" {
				t.Errorf("verificationMethod = %+v", raw.VerificationMethod)
			}
			if len(raw.Service) != 1 || raw.Service[0].ID != "#atproto_pds" {
				t.Errorf("service = %+v", raw.Service)
			}
		})
	}
}

func TestHandleAllowed(t *testing.T) {
	const host = "pds.example.com"
	domains := []string{".test", "users.example.org"}
	tests := []struct {
		handle  syntax.Handle
		host    string
		domains []string
		want    error
	}{
		{"pds.example.com", host, domains, nil},
		{"PDS.Example.COM", host, domains, nil},
		{"alice.pds.example.com", host, domains, nil},
		{"Alice.PDS.example.com", host, domains, nil},
		{"abc.pds.example.com", host, domains, nil},
		{"abcdefghijklmnopqr.pds.example.com", host, domains, nil},
		{"al.pds.example.com", host, domains, identity.ErrInvalidHandle},
		{"abcdefghijklmnopqrs.pds.example.com", host, domains, identity.ErrInvalidHandle},
		{"bob.alice.pds.example.com", host, domains, identity.ErrInvalidHandle},
		{"alice.test", host, domains, nil},
		{"al.test", host, domains, identity.ErrInvalidHandle},
		{"alice.users.example.org", host, domains, nil},
		{"alice.example.org", host, domains, identity.ErrUnsupportedDomain},
		{"alice.myusers.example.org", host, domains, identity.ErrUnsupportedDomain},
		{"alice.bsky.social", host, domains, identity.ErrUnsupportedDomain},
		{"example.com", host, domains, identity.ErrUnsupportedDomain},
		{"alice.example.com", host, domains, identity.ErrUnsupportedDomain},
		{"alice.local", host, domains, identity.ErrInvalidHandle},
		{"not a handle", host, domains, identity.ErrInvalidHandle},
		{"", host, domains, identity.ErrInvalidHandle},
		{"alice.pds.example.com", host, nil, nil},
		{"alice.test", host, nil, identity.ErrUnsupportedDomain},
		{"alice.test", "localhost", []string{".test"}, nil},
		{"alice.test", "localhost", []string{"test"}, nil},
		{"alice.localhost", "localhost", []string{".test"}, identity.ErrInvalidHandle},
		{"alice.sub.test", "localhost", []string{".test", ".sub.test"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.handle.String()+"@"+tt.host, func(t *testing.T) {
			err := identity.HandleAllowed(tt.handle, tt.host, tt.domains)
			if tt.want == nil {
				if err != nil {
					t.Errorf("HandleAllowed(%q) = %v, want nil", tt.handle, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("HandleAllowed(%q) = %v, want %v", tt.handle, err, tt.want)
			}
		})
	}
}
