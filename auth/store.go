// Package auth holds the one account of this server and its credentials: the
// account password, app passwords, and the legacy session JWTs (access and
// refresh) that the reference PDS issues, plus a rate limiter for logins.
// It knows nothing of HTTP; the api package maps its errors to XRPC errors.
package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// Bucket names. Everything of this package lives under the "auth_" prefix.
var (
	bucketAccount      = []byte("auth_account")        // keyAccount → accountRecord
	bucketAppPasswords = []byte("auth_app_passwords")  // name → appPasswordRecord
	bucketRefresh      = []byte("auth_refresh_tokens") // jti → refreshRecord
)

var keyAccount = []byte("account")

// DefaultMinLoginDuration is the least time Login takes when
// Config.MinLoginDuration is zero, as in the reference PDS: a login's duration
// then tells nothing about which check failed.
const DefaultMinLoginDuration = 350 * time.Millisecond

// Config configures a Store.
type Config struct {
	// JWTSecret is the HS256 key of session tokens (PDS_JWT_SECRET). Required.
	JWTSecret []byte
	// ServiceDID is the aud of access and refresh tokens: "did:web:<hostname>".
	// Required.
	ServiceDID string
	// Now is the clock of token times and expiries; nil means time.Now.
	Now func() time.Time
	// MinLoginDuration is the least time a Login call takes, successful or
	// not. Zero means DefaultMinLoginDuration; a negative value means no
	// minimum (tests).
	MinLoginDuration time.Duration
}

// Account is the one account of the server.
type Account struct {
	DID    syntax.DID
	Handle syntax.Handle
	Email  string
	// CreatedAt is set by CreateAccount when zero.
	CreatedAt time.Time
	// The account's status (active, deactivated, ...) is the account
	// package's (account.Status), not a credential.
	// EmailConfirmedAt is when the current email was confirmed; zero if it
	// is not.
	EmailConfirmedAt time.Time
}

// Store keeps the account, its credentials and its sessions in bbolt buckets
// it creates (names prefixed "auth_"). It is safe for concurrent use; every
// change is one bbolt transaction.
type Store struct {
	db         *bolt.DB
	secret     []byte
	serviceDID string
	now        func() time.Time
	minLogin   time.Duration
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
	s := &Store{
		db:         db,
		secret:     append([]byte(nil), cfg.JWTSecret...),
		serviceDID: cfg.ServiceDID,
		now:        cfg.Now,
		minLogin:   cfg.MinLoginDuration,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.minLogin == 0 {
		s.minLogin = DefaultMinLoginDuration
	}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketAccount, bucketAppPasswords, bucketRefresh} {
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

// accountRecord is the stored account.
type accountRecord struct {
	DID          string    `json:"did"`
	Handle       string    `json:"handle"`
	Email        string    `json:"email,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
	PasswordHash string    `json:"passwordHash"`
	// EmailConfirmedAt is set by confirmEmail and cleared when the email
	// changes.
	EmailConfirmedAt time.Time `json:"emailConfirmedAt,omitzero"`
	// TokensNotBefore (unix seconds) rejects access tokens issued before the
	// last password change (SetPassword); 0 means no such bound.
	TokensNotBefore int64 `json:"tokensNotBefore,omitempty"`
}

func (r *accountRecord) account() *Account {
	return &Account{
		DID:       syntax.DID(r.DID),
		Handle:    syntax.Handle(r.Handle),
		Email:     r.Email,
		CreatedAt: r.CreatedAt,

		EmailConfirmedAt: r.EmailConfirmedAt,
	}
}

// getAccount reads the account in tx; ErrNoAccount if there is none.
func getAccount(tx *bolt.Tx) (*accountRecord, error) {
	v := tx.Bucket(bucketAccount).Get(keyAccount)
	if v == nil {
		return nil, ErrNoAccount
	}
	var r accountRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decoding account: %w", err)
	}
	return &r, nil
}

func putAccount(tx *bolt.Tx, r *accountRecord) error {
	return putJSON(tx.Bucket(bucketAccount), keyAccount, r)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// CreateAccount stores the server's one account with its password (hashed
// with scrypt). The handle is stored lowercased, as is the email. It returns
// ErrAccountExists if an account exists, ErrInvalidAccount without a DID or
// handle, and ErrInvalidPassword for an empty or too long password.
func (s *Store) CreateAccount(ctx context.Context, acct Account, password string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if acct.DID == "" || acct.Handle == "" {
		return fmt.Errorf("%w: DID and handle are required", ErrInvalidAccount)
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	if acct.CreatedAt.IsZero() {
		acct.CreatedAt = s.now()
	}
	rec := &accountRecord{
		DID:          acct.DID.String(),
		Handle:       acct.Handle.Normalize().String(),
		Email:        strings.ToLower(acct.Email),
		CreatedAt:    acct.CreatedAt.UTC(),
		PasswordHash: hash,
		// Tokens of an earlier account of the same DID (deleted, then
		// migrated back here) must not work for this one.
		TokensNotBefore: s.now().Unix(),
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAccount).Get(keyAccount) != nil {
			return ErrAccountExists
		}
		return putAccount(tx, rec)
	})
}

// Account returns the account, or ErrNoAccount.
func (s *Store) Account(ctx context.Context) (*Account, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var acct *Account
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := getAccount(tx)
		if err != nil {
			return err
		}
		acct = r.account()
		return nil
	})
	return acct, err
}

// UpdateHandle sets the account's handle (stored lowercased). It checks
// nothing about the handle beyond it being set: resolution is the identity
// package's job.
func (s *Store) UpdateHandle(ctx context.Context, h syntax.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h == "" {
		return fmt.Errorf("%w: empty handle", ErrInvalidAccount)
	}
	return s.db.Update(func(tx *bolt.Tx) error { return s.UpdateHandleTx(tx, h) })
}

// UpdateHandleTx is UpdateHandle inside the caller's write transaction, so
// that the change and its #identity event commit together.
func (s *Store) UpdateHandleTx(tx *bolt.Tx, h syntax.Handle) error {
	if h == "" {
		return fmt.Errorf("%w: empty handle", ErrInvalidAccount)
	}
	r, err := getAccount(tx)
	if err != nil {
		return err
	}
	r.Handle = h.Normalize().String()
	return putAccount(tx, r)
}

// SetPassword replaces the account password. As in the reference PDS it
// revokes every refresh token (main and app-password sessions). Beyond the
// reference, access tokens issued before the change (in an earlier second)
// stop working too, so that a password reset after a compromise signs out
// everywhere at once. App passwords themselves stay.
func (s *Store) SetPassword(ctx context.Context, password string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		r, err := getAccount(tx)
		if err != nil {
			return err
		}
		r.PasswordHash = hash
		r.TokensNotBefore = s.now().Unix()
		if err := putAccount(tx, r); err != nil {
			return err
		}
		return deleteRefreshTokens(tx, func(*refreshRecord) bool { return true })
	})
}
