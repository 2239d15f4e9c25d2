// Package auth holds the credentials of this server's one account and the
// tokens built on them: the account password, app passwords, the legacy
// session JWTs (access and refresh) that the reference PDS issues,
// single-use email tokens, service-auth JWTs, a login guard, and the
// verifier seam that turns a request into a Principal. The account record
// itself (DID, handle, email) is the account package's: auth reads it
// through Config.Account. It knows nothing of HTTP; the api package maps its
// errors to XRPC errors.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket names. Everything of this package lives under the "auth_" prefix.
var (
	bucketCredentials  = []byte("auth_credentials")    // keyCredentials → credentialsRecord
	bucketAppPasswords = []byte("auth_app_passwords")  // name → appPasswordRecord
	bucketRefresh      = []byte("auth_refresh_tokens") // jti → refreshRecord
	// bucketLegacyAccount held the account record and its password hash in
	// one JSON value before the account package owned the record;
	// MigrateLegacyAccountTx splits it and deletes the bucket.
	bucketLegacyAccount = []byte("auth_account")
)

var keyCredentials = []byte("account")

// DefaultMinLoginDuration is the least time Login takes when
// Config.MinLoginDuration is zero, as in the reference PDS: a login's duration
// then tells nothing about which check failed.
const DefaultMinLoginDuration = 350 * time.Millisecond

// Identity is what auth needs to know of the account it holds credentials
// for: whom a login identifier names, whose tokens verify, and what a
// session reports. The account package owns and stores it.
type Identity struct {
	DID    syntax.DID
	Handle syntax.Handle
	Email  string
	// EmailConfirmed: the current email has been confirmed.
	EmailConfirmed bool
}

// IdentityFunc reads the account's Identity inside tx; ok is false when no
// account exists. It must only read.
type IdentityFunc func(tx *bolt.Tx) (id Identity, ok bool, err error)

// Config configures a Store.
type Config struct {
	// JWTSecret is the HS256 key of session tokens (PDS_JWT_SECRET). Required.
	JWTSecret []byte
	// ServiceDID is the aud of access and refresh tokens: "did:web:<hostname>".
	// Required.
	ServiceDID string
	// Account reads the account record, which the account package owns
	// (account.AuthIdentity). Required.
	Account IdentityFunc
	// Now is the clock of token times and expiries; nil means time.Now.
	Now func() time.Time
	// MinLoginDuration is the least time a Login call takes, successful or
	// not. Zero means DefaultMinLoginDuration; a negative value means no
	// minimum (tests).
	MinLoginDuration time.Duration
}

// Store keeps the account's credentials and sessions in bbolt buckets it
// creates (names prefixed "auth_"). It is safe for concurrent use; every
// change is one bbolt transaction.
type Store struct {
	db         *bolt.DB
	secret     []byte
	serviceDID string
	identity   IdentityFunc
	now        func() time.Time
	minLogin   time.Duration
	hashes     *HashPool // every scrypt runs here (hashpool.go)
}

// New returns a Store over db, creating its buckets. The caller keeps
// ownership of db and closes it after the last use of the Store.
func New(db *bolt.DB, cfg Config) (*Store, error) {
	if len(cfg.JWTSecret) == 0 {
		return nil, fmt.Errorf("auth: empty JWT secret")
	}
	if _, err := syntax.ParseDID(cfg.ServiceDID); err != nil {
		return nil, fmt.Errorf("auth: service DID: %w", err)
	}
	if cfg.Account == nil {
		return nil, fmt.Errorf("auth: no account reader (Config.Account)")
	}
	s := &Store{
		db:         db,
		secret:     append([]byte(nil), cfg.JWTSecret...),
		serviceDID: cfg.ServiceDID,
		identity:   cfg.Account,
		now:        cfg.Now,
		minLogin:   cfg.MinLoginDuration,
		hashes:     NewHashPool(0),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.minLogin == 0 {
		s.minLogin = DefaultMinLoginDuration
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCredentials, bucketAppPasswords, bucketRefresh} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("creating bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// credentialsRecord is the stored account password.
type credentialsRecord struct {
	PasswordHash string `json:"passwordHash"`
	// TokensNotBefore (unix seconds) rejects access tokens issued before the
	// last password change (SetPasswordTx); 0 means no such bound.
	TokensNotBefore int64 `json:"tokensNotBefore,omitempty"`
}

// account is the account as the checks of this package see it: the
// account package's Identity and this package's credentials.
type account struct {
	Identity
	credentialsRecord
}

// errNoCredentials: an account record without its password, which
// CreateCredentialsTx writes in the transaction that creates the record.
// Only damaged storage shows it.
var errNoCredentials = errors.New("auth: the account has no stored credentials")

// getAccount reads the account in tx; ok is false when there is none.
func (s *Store) getAccount(tx *bolt.Tx) (*account, bool, error) {
	id, ok, err := s.identity(tx)
	if err != nil || !ok {
		return nil, false, err
	}
	c, err := getCredentials(tx)
	if err != nil {
		return nil, false, err
	}
	return &account{Identity: id, credentialsRecord: *c}, true, nil
}

func getCredentials(tx *bolt.Tx) (*credentialsRecord, error) {
	v := tx.Bucket(bucketCredentials).Get(keyCredentials)
	if v == nil {
		return nil, errNoCredentials
	}
	var c credentialsRecord
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decoding credentials: %w", err)
	}
	return &c, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// PasswordHash is a new account password, checked (ValidatePassword) and
// hashed by HashNewPassword, ready to be stored in a transaction.
type PasswordHash struct{ hash string }

// HashNewPassword checks the rule of a new account password
// (ErrInvalidPassword) and hashes it with scrypt on the hash pool, before
// any transaction, so the scrypt work never holds the writer lock.
func (s *Store) HashNewPassword(ctx context.Context, password string) (PasswordHash, error) {
	if err := ctx.Err(); err != nil {
		return PasswordHash{}, err
	}
	if err := ValidatePassword(password); err != nil {
		return PasswordHash{}, err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return PasswordHash{}, err
	}
	return PasswordHash{hash: hash}, nil
}

// CreateCredentialsTx stores the password of a new account in the caller's
// write transaction, the one that creates the account record. Tokens issued
// before it (to an earlier account of the same DID, deleted and migrated
// back) do not work for this one.
func (s *Store) CreateCredentialsTx(tx *bolt.Tx, h PasswordHash) error {
	if h.hash == "" {
		return fmt.Errorf("auth: %w: not hashed", ErrInvalidPassword)
	}
	return putJSON(tx.Bucket(bucketCredentials), keyCredentials, &credentialsRecord{
		PasswordHash:    h.hash,
		TokensNotBefore: s.now().Unix(),
	})
}

// SetPasswordTx replaces the account password in the caller's write
// transaction. As in the reference PDS it revokes every refresh token (main
// and app-password sessions). Beyond the reference, access tokens issued
// before the change (in an earlier second) stop working too, so that a
// password reset after a compromise signs out everywhere at once. App
// passwords themselves stay.
func (s *Store) SetPasswordTx(tx *bolt.Tx, h PasswordHash) error {
	if h.hash == "" {
		return fmt.Errorf("auth: %w: not hashed", ErrInvalidPassword)
	}
	c, err := getCredentials(tx)
	if err != nil {
		return err
	}
	c.PasswordHash = h.hash
	c.TokensNotBefore = s.now().Unix()
	if err := putJSON(tx.Bucket(bucketCredentials), keyCredentials, c); err != nil {
		return err
	}
	return deleteRefreshTokens(tx, func(*refreshRecord) bool { return true })
}

// DeleteCredentialsTx deletes the account password, the app passwords and
// every session inside the caller's write transaction (account deletion).
// Access tokens already issued fail afterwards because there is no account
// to match.
func (s *Store) DeleteCredentialsTx(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketCredentials, bucketAppPasswords, bucketRefresh} {
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return fmt.Errorf("auth: deleting %s: %w", b, err)
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	return nil
}

// MigrateLegacyAccountTx splits a record of the old layout, where bucket
// auth_account held the account (DID, handle, email, times) and its
// password in one JSON value: the password moves to this package's
// credentials, the bucket is deleted, and the old value is returned for the
// account package to take its fields from. It returns nil when there is no
// old bucket or it is empty. Run it in the transaction that stores the
// account's part, so that a crash leaves either layout, never half of one.
func (s *Store) MigrateLegacyAccountTx(tx *bolt.Tx) ([]byte, error) {
	b := tx.Bucket(bucketLegacyAccount)
	if b == nil {
		return nil, nil
	}
	var old []byte
	if v := b.Get(keyCredentials); v != nil {
		old = append([]byte(nil), v...)
		var c credentialsRecord
		if err := json.Unmarshal(old, &c); err != nil {
			return nil, fmt.Errorf("auth: decoding the old account record: %w", err)
		}
		if c.PasswordHash == "" {
			return nil, fmt.Errorf("auth: the old account record has no password hash")
		}
		if err := putJSON(tx.Bucket(bucketCredentials), keyCredentials, &c); err != nil {
			return nil, err
		}
	}
	if err := tx.DeleteBucket(bucketLegacyAccount); err != nil {
		return nil, fmt.Errorf("auth: deleting %s: %w", bucketLegacyAccount, err)
	}
	return old, nil
}

// minLoginTime makes the calling check take at least Config.MinLoginDuration
// (unless ctx ends first): defer the function it returns. A login's duration
// then tells nothing about which check failed.
func (s *Store) minLoginTime(ctx context.Context) func() {
	if s.minLogin <= 0 {
		return func() {}
	}
	deadline := time.Now().Add(s.minLogin)
	return func() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}
