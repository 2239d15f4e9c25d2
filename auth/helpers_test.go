package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

const (
	testDID      = "did:plc:abcdefghijklmnopqrstuvwx"
	testHandle   = "alice.test"
	testEmail    = "alice@example.com"
	testPassword = "correct horse battery staple"
	testService  = "did:web:pds.example.com"
)

var testSecret = []byte("test-jwt-secret-0123456789abcdef")

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestStore opens a Store over a fresh bbolt file, with a fake clock and
// no minimum login time.
func newTestStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "pds.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	s, err := New(db, Config{JWTSecret: testSecret, ServiceDID: testService, Account: testIdentity, Now: clk.Now, MinLoginDuration: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

// bucketTestIdentity stands in for the account package's record in this
// package's tests: the Identity as JSON, in the same bbolt file.
var bucketTestIdentity = []byte("test_identity")

// testIdentity is the tests' Config.Account.
func testIdentity(tx *bolt.Tx) (Identity, bool, error) {
	b := tx.Bucket(bucketTestIdentity)
	if b == nil {
		return Identity{}, false, nil
	}
	v := b.Get([]byte("id"))
	if v == nil {
		return Identity{}, false, nil
	}
	var id Identity
	err := json.Unmarshal(v, &id)
	return id, err == nil, err
}

// putTestIdentity stores id (nil: deletes it) in tx.
func putTestIdentity(tx *bolt.Tx, id *Identity) error {
	b, err := tx.CreateBucketIfNotExists(bucketTestIdentity)
	if err != nil {
		return err
	}
	if id == nil {
		return b.Delete([]byte("id"))
	}
	return putJSON(b, []byte("id"), id)
}

// createAccount does what the account package does on account creation:
// the record and the password in one transaction.
func createAccount(s *Store, id Identity, password string) error {
	h, err := s.HashNewPassword(context.Background(), password)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := putTestIdentity(tx, &id); err != nil {
			return err
		}
		return s.CreateCredentialsTx(tx, h)
	})
}

// setPassword does what account.Service.SetPassword does.
func setPassword(s *Store, password string) error {
	h, err := s.HashNewPassword(context.Background(), password)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return s.SetPasswordTx(tx, h) })
}

// newTestAccount is newTestStore with the test account created.
func newTestAccount(t *testing.T) (*Store, *clock) {
	t.Helper()
	s, clk := newTestStore(t)
	err := createAccount(s, Identity{DID: testDID, Handle: syntax.Handle(testHandle), Email: testEmail}, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func login(t *testing.T, s *Store, identifier, password string) *Session {
	t.Helper()
	sess, err := s.Login(context.Background(), identifier, password)
	if err != nil {
		t.Fatalf("Login(%q): %v", identifier, err)
	}
	return sess
}

func b64(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// craftHS256 builds a token by hand, signed with HMAC-SHA256 under key (or
// with an empty signature if key is nil).
func craftHS256(header, claims map[string]any, key []byte) string {
	signing := b64(header) + "." + b64(claims)
	if key == nil {
		return signing + "."
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// decodeSegment decodes one part of a compact JWT into a map.
func decodeSegment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	data, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jtiOf(t *testing.T, token string) string {
	t.Helper()
	jti, _ := decodeSegment(t, token, 1)["jti"].(string)
	return jti
}
