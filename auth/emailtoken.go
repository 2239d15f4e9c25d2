package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// EmailTokenPurpose binds an email token to the one action it authorizes. A
// token issued for one purpose never works for another.
type EmailTokenPurpose string

// The purposes of email tokens, with the reference PDS's names.
const (
	PurposeConfirmEmail  EmailTokenPurpose = "confirm_email"
	PurposeUpdateEmail   EmailTokenPurpose = "update_email"
	PurposeResetPassword EmailTokenPurpose = "reset_password"
	PurposeDeleteAccount EmailTokenPurpose = "delete_account"
	PurposePLCOperation  EmailTokenPurpose = "plc_operation"
	// PurposeSignIn is the email second factor of a sign-in
	// (createSession's authFactorToken, the OAuth sign-in page).
	PurposeSignIn EmailTokenPurpose = "auth_factor"
)

// EmailTokenPurposes lists every purpose, in a fixed order.
var EmailTokenPurposes = []EmailTokenPurpose{
	PurposeConfirmEmail, PurposeUpdateEmail, PurposeResetPassword, PurposeDeleteAccount, PurposePLCOperation,
	PurposeSignIn,
}

// Valid reports whether p is one of the known purposes.
func (p EmailTokenPurpose) Valid() bool {
	for _, q := range EmailTokenPurposes {
		if p == q {
			return true
		}
	}
	return false
}

// EmailTokenLifetime is how long an email token stays usable after it was
// issued: 15 minutes, as in the reference PDS.
const EmailTokenLifetime = 15 * time.Minute

// Errors of email tokens. The api maps ErrEmailTokenInvalid to 400
// InvalidToken and ErrEmailTokenExpired to 400 ExpiredToken, as the
// reference does ("Token is invalid", "Token is expired").
var (
	// ErrEmailTokenInvalid: no live token of that purpose matches (wrong,
	// malformed, already used, or superseded by a newer one).
	ErrEmailTokenInvalid = errors.New("email token is invalid")
	// ErrEmailTokenExpired: the token matches but its lifetime has passed.
	ErrEmailTokenExpired = errors.New("email token is expired")
	// ErrEmailTokenPurpose: a purpose that is not one of EmailTokenPurposes
	// (a programming error, never a client's).
	ErrEmailTokenPurpose = errors.New("unknown email token purpose")
)

var bucketEmailTokens = []byte("auth_email_tokens") // purpose → emailTokenRecord

// emailTokenRecord is a stored token. Only the SHA-256 of the normalized
// token is kept: someone who reads the database file learns nothing usable
// within the token's lifetime short of a brute force of 2^50 hashes.
type emailTokenRecord struct {
	Hash      []byte    `json:"hash"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// LiveEmailToken describes a token that can still be used. The token itself
// is not in it: only its hash is stored.
type LiveEmailToken struct {
	Purpose   EmailTokenPurpose
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// EmailTokens issues and checks the single-use tokens that the server mails
// to the account's address (or that the operator reads with the CLI). There
// is at most one token per purpose, as in the reference PDS (one per purpose
// and DID, and this server hosts one DID): issuing a new one replaces the
// old. Tokens are stored hashed, compared in constant time, and consumed by
// their first successful use.
//
// Because only hashes are stored, a token that was lost (no SMTP configured,
// or the mail never arrived) cannot be shown again; the CLI issues a fresh
// one instead (Issue), which replaces the lost one.
//
// EmailTokens is safe for concurrent use; every change is one bbolt
// transaction, and the *Tx methods join the caller's, so that consuming a
// token and the change it authorizes commit together or not at all.
type EmailTokens struct {
	db  *bolt.DB
	now func() time.Time
}

// NewEmailTokens returns the token store over db, creating its bucket. now
// is its clock; nil means time.Now. The caller keeps ownership of db.
func NewEmailTokens(db *bolt.DB, now func() time.Time) (*EmailTokens, error) {
	if now == nil {
		now = time.Now
	}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketEmailTokens)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("auth: creating bucket %s: %w", bucketEmailTokens, err)
	}
	return &EmailTokens{db: db, now: now}, nil
}

// Issue makes a new token for purpose, replacing any earlier one of that
// purpose, and returns it in the form "XXXXX-XXXXX" (10 base32 characters,
// upper case) with its expiry. The plain token exists only in the return
// value: the caller mails it or shows it, and must never log it.
func (t *EmailTokens) Issue(ctx context.Context, purpose EmailTokenPurpose) (token string, expiresAt time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, err
	}
	err = t.db.Update(func(tx *bolt.Tx) error {
		token, expiresAt, err = t.IssueTx(tx, purpose)
		return err
	})
	return token, expiresAt, err
}

// IssueTx is Issue inside the caller's write transaction (for example the
// one that also queues the mail carrying the token).
func (t *EmailTokens) IssueTx(tx *bolt.Tx, purpose EmailTokenPurpose) (token string, expiresAt time.Time, err error) {
	if !purpose.Valid() {
		return "", time.Time{}, fmt.Errorf("%w: %q", ErrEmailTokenPurpose, purpose)
	}
	token, err = newEmailToken()
	if err != nil {
		return "", time.Time{}, err
	}
	now := t.now().UTC()
	rec := emailTokenRecord{
		Hash:      hashEmailToken(token),
		IssuedAt:  now,
		ExpiresAt: now.Add(EmailTokenLifetime),
	}
	if err := putJSON(tx.Bucket(bucketEmailTokens), []byte(purpose), &rec); err != nil {
		return "", time.Time{}, fmt.Errorf("storing email token: %w", err)
	}
	return token, rec.ExpiresAt, nil
}

// Check reports whether token is the live token of purpose, without using
// it up: nil, ErrEmailTokenInvalid or ErrEmailTokenExpired. It suits a
// flow whose outside step may fail after the check (the token should then
// stay usable); such a flow calls Consume once the step succeeded.
func (t *EmailTokens) Check(ctx context.Context, purpose EmailTokenPurpose, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return t.db.View(func(tx *bolt.Tx) error {
		_, err := t.match(tx, purpose, token)
		return err
	})
}

// Consume checks token as Check does and, when it is valid, deletes it, so
// that it works exactly once.
func (t *EmailTokens) Consume(ctx context.Context, purpose EmailTokenPurpose, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return t.db.Update(func(tx *bolt.Tx) error { return t.ConsumeTx(tx, purpose, token) })
}

// ConsumeTx is Consume inside the caller's write transaction: if the caller's
// transaction rolls back, the token stays usable.
func (t *EmailTokens) ConsumeTx(tx *bolt.Tx, purpose EmailTokenPurpose, token string) error {
	if _, err := t.match(tx, purpose, token); err != nil {
		return err
	}
	return tx.Bucket(bucketEmailTokens).Delete([]byte(purpose))
}

// match finds the record of purpose and checks token against it.
func (t *EmailTokens) match(tx *bolt.Tx, purpose EmailTokenPurpose, token string) (*emailTokenRecord, error) {
	if !purpose.Valid() {
		return nil, fmt.Errorf("%w: %q", ErrEmailTokenPurpose, purpose)
	}
	norm, ok := normalizeEmailToken(token)
	v := tx.Bucket(bucketEmailTokens).Get([]byte(purpose))
	if v == nil {
		return nil, ErrEmailTokenInvalid
	}
	var rec emailTokenRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("decoding email token: %w", err)
	}
	// A malformed token is still hashed and compared, so that its answer
	// takes the time of any other wrong token.
	if subtle.ConstantTimeCompare(hashEmailToken(norm), rec.Hash) != 1 || !ok {
		return nil, ErrEmailTokenInvalid
	}
	if !t.now().Before(rec.ExpiresAt) {
		return nil, ErrEmailTokenExpired
	}
	return &rec, nil
}

// Live lists the tokens that have not expired, by purpose. Expired records
// are left for the next Issue or DeleteAllTx to overwrite.
func (t *EmailTokens) Live(ctx context.Context) ([]LiveEmailToken, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := t.now()
	var out []LiveEmailToken
	err := t.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEmailTokens).ForEach(func(k, v []byte) error {
			var rec emailTokenRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decoding email token: %w", err)
			}
			if now.Before(rec.ExpiresAt) {
				out = append(out, LiveEmailToken{Purpose: EmailTokenPurpose(k), IssuedAt: rec.IssuedAt, ExpiresAt: rec.ExpiresAt})
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].IssuedAt.Before(out[j].IssuedAt) })
	return out, err
}

// DeleteAllTx deletes every token, in the caller's write transaction (the
// account is deleted, or its password reset by the admin).
func (t *EmailTokens) DeleteAllTx(tx *bolt.Tx) error {
	b := tx.Bucket(bucketEmailTokens)
	for _, p := range EmailTokenPurposes {
		if err := b.Delete([]byte(p)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteTx deletes the token of purpose, if any, in the caller's write
// transaction (for example updateEmail, which ends a pending confirmation).
func (t *EmailTokens) DeleteTx(tx *bolt.Tx, purpose EmailTokenPurpose) error {
	return tx.Bucket(bucketEmailTokens).Delete([]byte(purpose))
}

const emailTokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" // RFC 4648 base32

// newEmailToken returns 10 random base32 characters as "XXXXX-XXXXX", the
// reference's format (50 bits).
func newEmailToken() (string, error) {
	var raw [10]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	var b strings.Builder
	for i, r := range raw {
		if i == 5 {
			b.WriteByte('-')
		}
		b.WriteByte(emailTokenAlphabet[r&31]) // 256 is a multiple of 32: no bias
	}
	return b.String(), nil
}

// maxEmailTokenInput bounds what is normalized: a real token is 11 bytes.
const maxEmailTokenInput = 64

// normalizeEmailToken turns what a person typed or pasted into the stored
// form: upper case, without the dash or spaces. ok is false unless the result
// is 10 base32 characters.
func normalizeEmailToken(s string) (norm string, ok bool) {
	if len(s) > maxEmailTokenInput {
		return "", false
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			continue
		case strings.ContainsRune(emailTokenAlphabet, r):
			b.WriteRune(r)
		default:
			return "", false
		}
	}
	norm = b.String()
	return norm, len(norm) == 10
}

func hashEmailToken(token string) []byte {
	norm, _ := normalizeEmailToken(token)
	sum := sha256.Sum256([]byte("pds email token\x00" + norm))
	return sum[:]
}
