package auth

import (
	"context"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// loginPasswordOK is the length rule of a password presented to log in:
// non-empty and at most MaxLoginPasswordLength characters. A password that
// breaks it fails as ErrInvalidLogin without being hashed.
func loginPasswordOK(password string) bool {
	return password != "" && utf8.RuneCountInString(password) <= MaxLoginPasswordLength
}

// CheckAccountPassword returns nil if identifier names the account (as for
// Login) and password is the account password; app passwords do not count.
// It is the OAuth sign-in page's check: it starts no session. Any mismatch
// is ErrInvalidLogin, and like Login every call takes at least
// Config.MinLoginDuration.
func (s *Store) CheckAccountPassword(ctx context.Context, identifier, password string) error {
	defer s.minLoginTime(ctx)()
	return s.checkAccountPassword(ctx, &identifier, password)
}

// VerifyAccountPassword checks the account password (not an app password),
// as deleteAccount requires; any mismatch is ErrInvalidLogin. Like Login it
// takes at least Config.MinLoginDuration.
func (s *Store) VerifyAccountPassword(ctx context.Context, password string) error {
	defer s.minLoginTime(ctx)()
	return s.checkAccountPassword(ctx, nil, password)
}

// checkAccountPassword is the check of CheckAccountPassword (identifier
// set) and VerifyAccountPassword (identifier nil).
func (s *Store) checkAccountPassword(ctx context.Context, identifier *string, password string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !loginPasswordOK(password) {
		return ErrInvalidLogin
	}
	var acct *account
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		acct, ok, err = s.getAccount(tx)
		return err
	})
	if err != nil {
		return err
	}
	if !ok || (identifier != nil && !acct.matches(*identifier)) {
		return ErrInvalidLogin
	}
	match, err := verifyPassword(password, acct.PasswordHash)
	if err != nil {
		return err
	}
	if !match {
		return ErrInvalidLogin
	}
	return nil
}
