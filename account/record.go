package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	bolt "go.etcd.io/bbolt"
)

// bucketAccount holds the account record: keyRecord → Account as JSON.
// Before this package owned the record it lived, with the password hash, in
// auth's bucket auth_account; Open moves it (migrateLegacyTx).
var (
	bucketAccount = []byte("account")
	keyRecord     = []byte("record")
)

// Account is the server's one account as this package stores it. Its
// status is kept beside it (Status); its credentials are auth's.
type Account struct {
	DID    syntax.DID    `json:"did"`
	Handle syntax.Handle `json:"handle"`
	// Email is stored lowercased; "" when the account has none.
	Email     string    `json:"email,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// EmailConfirmedAt is when the current email was confirmed; zero if it
	// is not (a changed address is unconfirmed).
	EmailConfirmedAt time.Time `json:"emailConfirmedAt,omitzero"`
}

// ErrEmailMismatch: confirmEmail with an address other than the account's.
var ErrEmailMismatch = errors.New("invalid email")

// getAccount reads the record in tx; ErrNoAccount if there is none.
func getAccount(tx *bolt.Tx) (*Account, error) {
	b := tx.Bucket(bucketAccount)
	if b == nil {
		return nil, ErrNoAccount
	}
	v := b.Get(keyRecord)
	if v == nil {
		return nil, ErrNoAccount
	}
	var a Account
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("decoding the account record: %w", err)
	}
	return &a, nil
}

func putAccount(tx *bolt.Tx, a *Account) error {
	if a.DID == "" || a.Handle == "" {
		return fmt.Errorf("account record without DID or handle")
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	b, err := tx.CreateBucketIfNotExists(bucketAccount)
	if err != nil {
		return err
	}
	return b.Put(keyRecord, data)
}

// Account returns the account record, or ErrNoAccount.
func (s *Service) Account(ctx context.Context) (*Account, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var a *Account
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		a, err = getAccount(tx)
		return err
	})
	return a, err
}

// AuthIdentity reads the account for the auth package (its
// auth.Config.Account): auth checks logins and tokens against the record
// this package owns.
func AuthIdentity(tx *bolt.Tx) (auth.Identity, bool, error) {
	a, err := getAccount(tx)
	if errors.Is(err, ErrNoAccount) {
		return auth.Identity{}, false, nil
	}
	if err != nil {
		return auth.Identity{}, false, err
	}
	return auth.Identity{
		DID:            a.DID,
		Handle:         a.Handle,
		Email:          a.Email,
		EmailConfirmed: !a.EmailConfirmedAt.IsZero(),
	}, true, nil
}

// createAccountTx stores a new account: its record and its password, in
// tx. ErrAccountExists if there is one.
func (s *Service) createAccountTx(tx *bolt.Tx, a *Account, pw auth.PasswordHash) error {
	if _, err := getAccount(tx); err == nil {
		return ErrAccountExists
	} else if !errors.Is(err, ErrNoAccount) {
		return err
	}
	if err := putAccount(tx, a); err != nil {
		return err
	}
	return s.auth.CreateCredentialsTx(tx, pw)
}

// SetPassword replaces the account password (the operator's
// admin.updateAccountPassword and `pds account reset-password`): every
// session ends (auth.Store.SetPasswordTx).
func (s *Service) SetPassword(ctx context.Context, password string) error {
	return setPassword(ctx, s.db, s.auth, password, nil)
}

// setPassword replaces the account password in one transaction that first
// runs check, if set (the consumption of a reset_password token): if check
// fails, nothing changes. The password is hashed before the transaction,
// so the scrypt work does not hold the writer lock.
func setPassword(ctx context.Context, db *bolt.DB, a *auth.Store, password string, check func(*bolt.Tx) error) error {
	h, err := a.HashNewPassword(ctx, password)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		if _, err := getAccount(tx); err != nil {
			return err
		}
		return a.SetPasswordTx(tx, h)
	})
}

// confirmEmailTx marks the account's email confirmed at now. email must be
// the account's current address (case-insensitive), as in the reference;
// otherwise ErrEmailMismatch.
func confirmEmailTx(tx *bolt.Tx, email string, now time.Time) error {
	a, err := getAccount(tx)
	if err != nil {
		return err
	}
	if a.Email == "" || !strings.EqualFold(a.Email, strings.TrimSpace(email)) {
		return ErrEmailMismatch
	}
	a.EmailConfirmedAt = now.UTC()
	return putAccount(tx, a)
}

// setEmailTx replaces the account's email (normalized by NormalizeEmail). A
// changed address is no longer confirmed.
func setEmailTx(tx *bolt.Tx, email string) error {
	a, err := getAccount(tx)
	if err != nil {
		return err
	}
	if email != a.Email {
		a.Email = email
		a.EmailConfirmedAt = time.Time{}
	}
	return putAccount(tx, a)
}

// migrateLegacyTx moves an account record of the old layout (a data
// directory written before this package owned the record) into
// bucketAccount, in the caller's transaction: auth takes the password, this
// package the rest, and the old bucket goes.
func (s *Service) migrateLegacyTx(tx *bolt.Tx) error {
	old, err := s.auth.MigrateLegacyAccountTx(tx)
	if err != nil || old == nil {
		return err
	}
	// The account fields kept their names and encoding: the old value
	// decodes as an Account (its password fields are ignored here).
	var a Account
	if err := json.Unmarshal(old, &a); err != nil {
		return fmt.Errorf("decoding the old account record: %w", err)
	}
	if _, err := getAccount(tx); err == nil {
		return fmt.Errorf("an account record exists in both the old and the new layout")
	}
	return putAccount(tx, &a)
}
