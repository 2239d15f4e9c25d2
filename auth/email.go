package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrEmailMismatch: confirmEmail with an address other than the account's.
var ErrEmailMismatch = errors.New("invalid email")

// ConfirmEmailTx marks the account's email confirmed, in the caller's write
// transaction (the one that consumes the confirm_email token). email must be
// the account's current address (case-insensitive), as in the reference;
// otherwise ErrEmailMismatch.
func (s *Store) ConfirmEmailTx(tx *bolt.Tx, email string) error {
	r, err := getAccount(tx)
	if err != nil {
		return err
	}
	if r.Email == "" || !strings.EqualFold(r.Email, strings.TrimSpace(email)) {
		return ErrEmailMismatch
	}
	r.EmailConfirmedAt = s.now().UTC()
	return putAccount(tx, r)
}

// SetEmailTx replaces the account's email (stored lowercased) in the
// caller's write transaction. A changed address is no longer confirmed.
func (s *Store) SetEmailTx(tx *bolt.Tx, email string) error {
	r, err := getAccount(tx)
	if err != nil {
		return err
	}
	email = strings.ToLower(strings.TrimSpace(email))
	if email != r.Email {
		r.Email = email
		r.EmailConfirmedAt = time.Time{}
	}
	return putAccount(tx, r)
}

// SetPasswordWith is SetPassword whose transaction first runs check (for
// example the consumption of a reset_password token): if check fails,
// nothing changes. The new password is hashed before the transaction, so
// the scrypt work does not hold the database's writer lock.
func (s *Store) SetPasswordWith(ctx context.Context, password string, check func(tx *bolt.Tx) error) error {
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
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
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

// AccountTx is Account inside the caller's transaction.
func (s *Store) AccountTx(tx *bolt.Tx) (*Account, error) {
	r, err := getAccount(tx)
	if err != nil {
		return nil, err
	}
	return r.account(), nil
}

// RevokeAllSessions deletes every refresh token (main and app-password
// sessions), as the reference does when the operator takes the account
// down.
func (s *Store) RevokeAllSessions(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return deleteRefreshTokens(tx, func(*refreshRecord) bool { return true })
	})
}
