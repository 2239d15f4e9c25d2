package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pdsbox/pds/auth"
	bolt "go.etcd.io/bbolt"
)

// The email second factor ("emailAuthFactor"): with it on, a sign-in with
// the account password (createSession, the OAuth sign-in page) also needs a
// single-use code mailed to the account's confirmed address. App-password
// logins are not asked, as in the reference PDS: app passwords are already a
// separate, revocable secret per app.

// Errors of the email second factor; the api maps them to XRPC errors.
var (
	// ErrAuthFactorTokenRequired: the password was right, the account has
	// the email second factor, and no code came with it. A fresh code has
	// been mailed (XRPC 401 AuthFactorTokenRequired).
	ErrAuthFactorTokenRequired = errors.New("a sign-in code was sent to the account's email address: sign in again with it as authFactorToken")
	// ErrEmailAuthFactorUnconfirmed: updateEmail turning the factor on for
	// an address that is not the account's confirmed one (the codes would
	// go where the owner may not read them).
	ErrEmailAuthFactorUnconfirmed = errors.New("confirm your email address (and keep it unchanged) before turning on sign-in codes")
)

// bucketEmailFactor holds the factor's one record under factorKey. It is
// the account package's own bucket, next to the account record (which
// says which address is confirmed) rather than inside it.
var (
	bucketEmailFactor = []byte("account_email_factor")
	factorKey         = []byte("email")
)

// emailFactorRecord says the factor is on for the account DID while its
// address is Email. Keeping the DID and the address makes a record that
// outlived them (the address changed by a path that did not delete it, the
// account deleted and made again) count as off, never as on for another
// address.
type emailFactorRecord struct {
	DID       string    `json:"did"`
	Email     string    `json:"email"`
	EnabledAt time.Time `json:"enabledAt"`
}

// factorOnTx reports whether the factor is on for acct: a record for its
// DID and current address, which is confirmed.
func factorOnTx(tx *bolt.Tx, acct *Account) (bool, error) {
	b := tx.Bucket(bucketEmailFactor)
	if b == nil || acct.Email == "" || acct.EmailConfirmedAt.IsZero() {
		return false, nil
	}
	v := b.Get(factorKey)
	if v == nil {
		return false, nil
	}
	var rec emailFactorRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return false, fmt.Errorf("account: decoding the email factor: %w", err)
	}
	return rec.DID == acct.DID.String() && strings.EqualFold(rec.Email, acct.Email), nil
}

// setFactorTx turns the factor on for acct's current address.
func setFactorTx(tx *bolt.Tx, acct *Account, now time.Time) error {
	b, err := tx.CreateBucketIfNotExists(bucketEmailFactor)
	if err != nil {
		return err
	}
	v, err := json.Marshal(emailFactorRecord{DID: acct.DID.String(), Email: strings.ToLower(acct.Email), EnabledAt: now.UTC()})
	if err != nil {
		return err
	}
	return b.Put(factorKey, v)
}

// deleteFactorTx turns the factor off.
func deleteFactorTx(tx *bolt.Tx) error {
	b := tx.Bucket(bucketEmailFactor)
	if b == nil {
		return nil
	}
	return b.Delete(factorKey)
}

// AuthFactor reports whether the email second factor is on (getSession's
// emailAuthFactor).
func (e *Email) AuthFactor(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var on bool
	err := e.cfg.DB.View(func(tx *bolt.Tx) error {
		acct, err := getAccount(tx)
		if err != nil {
			return err
		}
		on, err = factorOnTx(tx, acct)
		return err
	})
	if errors.Is(err, ErrNoAccount) {
		return false, nil
	}
	return on, err
}

// Login is createSession's check of identifier and password
// (auth.Store.Login) with the email second factor, as the reference PDS
// does it: an authFactorToken, when given, must be the live sign-in code
// (it is used up in the transaction that issues the session); without one,
// an account-password login of an account with the factor on issues and
// mails a fresh code and fails with ErrAuthFactorTokenRequired. Only a right
// password gets that far, so the answer says nothing to someone guessing.
func (e *Email) Login(ctx context.Context, identifier, password, authFactorToken string) (*auth.Session, error) {
	token := strings.TrimSpace(authFactorToken)
	sess, err := e.cfg.Auth.LoginWith(ctx, identifier, password, func(tx *bolt.Tx, appPassword bool) error {
		if token != "" {
			return e.cfg.Tokens.ConsumeTx(tx, auth.PurposeSignIn, token)
		}
		if appPassword {
			return nil
		}
		acct, err := getAccount(tx)
		if err != nil {
			return err
		}
		on, err := factorOnTx(tx, acct)
		if err != nil {
			return err
		}
		if on {
			return ErrAuthFactorTokenRequired
		}
		return nil
	})
	if errors.Is(err, ErrAuthFactorTokenRequired) {
		if serr := e.sendToken(ctx, auth.PurposeSignIn); serr != nil {
			return nil, serr
		}
	}
	return sess, err
}

// updateFactorTx applies updateEmail's emailAuthFactor when address is the
// account's current, confirmed one (handled reports so; the address itself
// is then left alone, so that it stays confirmed). Turning the factor on
// needs nothing more: it only adds protection. Turning it off needs an
// update_email code, as changing the address does; without one, sendCode
// asks the caller to mail one and answer TokenRequired.
func (e *Email) updateFactorTx(tx *bolt.Tx, acct *Account, address, token string, on bool) (handled, sendCode bool, err error) {
	if acct.Email == "" || !strings.EqualFold(acct.Email, address) || acct.EmailConfirmedAt.IsZero() {
		if on {
			return false, false, ErrEmailAuthFactorUnconfirmed
		}
		return false, false, nil // an address change turns it off anyway
	}
	was, err := factorOnTx(tx, acct)
	if err != nil {
		return true, false, err
	}
	switch {
	case on == was:
		return true, false, nil
	case on:
		return true, false, setFactorTx(tx, acct, time.Now())
	case strings.TrimSpace(token) == "":
		return true, true, nil
	default:
		if err := e.cfg.Tokens.ConsumeTx(tx, auth.PurposeUpdateEmail, token); err != nil {
			return true, false, err
		}
		return true, false, deleteFactorTx(tx)
	}
}

// SignInFactor is the email second factor as the OAuth sign-in page asks
// it (oauth.SecondFactor): whether it is on, mailing a code, checking one.
type SignInFactor struct{ e *Email }

// SignInFactor returns the email second factor of the OAuth sign-in page.
func (e *Email) SignInFactor() SignInFactor { return SignInFactor{e} }

// Required reports whether a sign-in with the password needs a code.
func (f SignInFactor) Required(ctx context.Context) (bool, error) { return f.e.AuthFactor(ctx) }

// Send mails a fresh sign-in code, replacing any earlier one.
func (f SignInFactor) Send(ctx context.Context) error { return f.e.sendToken(ctx, auth.PurposeSignIn) }

// Check uses up code if it is the live sign-in code.
func (f SignInFactor) Check(ctx context.Context, code string) error {
	return f.e.cfg.Tokens.Consume(ctx, auth.PurposeSignIn, code)
}
