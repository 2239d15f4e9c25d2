package auth

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// CheckAccountPassword returns nil if identifier names the account (as for
// Login) and password is the account password; app passwords do not count.
// It is the OAuth sign-in page's check: it starts no session. Any mismatch
// is ErrInvalidLogin, and like Login every call takes at least
// Config.MinLoginDuration.
func (s *Store) CheckAccountPassword(ctx context.Context, identifier, password string) error {
	if s.minLogin > 0 {
		deadline := time.Now().Add(s.minLogin)
		defer func() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if utf8.RuneCountInString(password) > MaxLoginPasswordLength || password == "" {
		return ErrInvalidLogin
	}
	var acct *accountRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		acct, err = getAccount(tx)
		return err
	})
	if errors.Is(err, ErrNoAccount) {
		return ErrInvalidLogin
	}
	if err != nil {
		return err
	}
	if !acct.matches(identifier) {
		return ErrInvalidLogin
	}
	ok, err := verifyPassword(password, acct.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return ErrInvalidLogin
	}
	return nil
}
