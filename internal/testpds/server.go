package testpds

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/lexicons"
	bolt "go.etcd.io/bbolt"
)

// Server is the API over real parts (a bbolt file in a temporary
// directory, the blob store, the sequencer, a mock PLC) on 127.0.0.1, for
// tests of the api package and of anything that needs no more than it.
// cmd/pds's own harness starts the whole binary's wiring instead.
type Server struct {
	URL      string
	Handler  http.Handler // what api.NewRouter returned
	PLC      *MockPLC
	DB       *bolt.DB
	Auth     *auth.Store
	Accounts *account.Service
	Events   *events.Sequencer
}

// Options adjust Start.
type Options struct {
	// AdminPassword is the Basic admin password ("admin-secret" if empty).
	AdminPassword string
	// Verifiers are passed to api.Deps.Verifiers.
	Verifiers []auth.Verifier
}

// ServiceDID is the DID of servers started by Start (hostname localhost).
const ServiceDID = "did:web:localhost"

// Start wires and serves the API; everything is closed with the test.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.AdminPassword == "" {
		o.AdminPassword = "admin-secret"
	}
	dir := tb.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "pds.db"), 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	plc := NewMockPLC(tb)
	must := func(err error) {
		tb.Helper()
		if err != nil {
			db.Close()
			tb.Fatal(err)
		}
	}
	a, err := auth.New(db, auth.Config{JWTSecret: []byte("test-jwt-secret"), ServiceDID: ServiceDID, Account: account.AuthIdentity, MinLoginDuration: -1})
	must(err)
	blobs, err := blobstore.New(db, blobstore.Config{Dir: filepath.Join(dir, "blobs"), MaxSize: 5 << 20})
	must(err)
	ev, err := events.New(db, events.Config{Log: log})
	must(err)
	rot, err := atcrypto.GeneratePrivateKeyK256()
	must(err)
	plcClient := &identity.PLCClient{URL: plc.URL, HTTP: &http.Client{Timeout: 5 * time.Second}}
	resolver := &identity.Resolver{PLC: plcClient, HTTP: identity.NewSafeClient(5*time.Second, true)}
	accts, err := account.Open(context.Background(), db, a, blobs, account.Config{
		DataDir: dir, Hostname: "localhost", PublicURL: "http://localhost", ServiceDomains: []string{".test"},
		DIDMethod: account.DIDPLC, PLC: plcClient, Resolver: resolver, RotationKey: rot, Log: log, Events: ev,
	})
	must(err)
	tokens, err := auth.NewEmailTokens(db, nil)
	must(err)
	email := account.NewEmail(account.EmailConfig{DB: db, Auth: a, Tokens: tokens, Hostname: "localhost", Log: log})
	cat := lexicon.NewBaseCatalog()
	must(cat.LoadEmbedFS(lexicons.FS))
	h := api.NewRouter(api.Deps{
		Config: api.Config{
			Hostname: "localhost", PublicURL: "http://localhost", ServiceDID: ServiceDID,
			AvailableUserDomains: []string{".test"}, InviteRequired: true, AdminPassword: o.AdminPassword,
			BlobUploadLimit: 5 << 20, AllowPrivateUpstreams: true,
		},
		Accounts: accts, Auth: a, Blobs: blobs, Events: ev, Resolver: resolver, Lexicons: cat, Log: log,
		Verifiers: o.Verifiers, Email: email,
	})
	hs := httptest.NewServer(h)
	tb.Cleanup(func() {
		hs.Close()
		ev.Close()
		db.Close()
	})
	return &Server{URL: hs.URL, Handler: h, PLC: plc, DB: db, Auth: a, Accounts: accts, Events: ev}
}

// Do sends one request to the server's XRPC method nsid; see Request.
func (s *Server) Do(tb testing.TB, method, nsid, authorization string, body any, contentType string) (int, []byte, http.Header) {
	tb.Helper()
	return Request(tb, method, s.URL+"/xrpc/"+nsid, authorization, body, contentType)
}

// Request sends one request: body nil, []byte (raw, with contentType) or a
// value sent as JSON; authorization is the whole Authorization header (""
// for none). It returns the status, the body and the headers.
func Request(tb testing.TB, method, url, authorization string, body any, contentType string) (int, []byte, http.Header) {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
		contentType = "application/json"
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, raw, resp.Header
}

// Call is Do with a bearer token ("" for none) and a JSON answer decoded.
func (s *Server) Call(tb testing.TB, method, nsid, token string, body any) (int, map[string]any) {
	tb.Helper()
	authz := ""
	if token != "" {
		authz = "Bearer " + token
	}
	st, raw, _ := s.Do(tb, method, nsid, authz, body, "")
	var out map[string]any
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out)
	}
	return st, out
}

// CreateAccount makes alice.test with the server's invite code and
// returns its DID and session tokens.
func (s *Server) CreateAccount(tb testing.TB) (did, access, refresh string) {
	tb.Helper()
	code, err := s.Accounts.InviteCode()
	if err != nil {
		tb.Fatal(err)
	}
	st, out := s.Call(tb, "POST", "com.atproto.server.createAccount", "", map[string]any{
		"handle": "alice.test", "email": "alice@example.com", "password": "hunter2-hunter2", "inviteCode": code,
	})
	if st != 200 {
		tb.Fatalf("createAccount: %d %v", st, out)
	}
	return out["did"].(string), out["accessJwt"].(string), out["refreshJwt"].(string)
}
