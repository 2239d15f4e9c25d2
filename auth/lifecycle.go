package auth

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// VerifyAccountPassword checks the account password (not an app password),
// as deleteAccount requires; any mismatch is ErrInvalidLogin. Like Login it
// takes at least Config.MinLoginDuration.
func (s *Store) VerifyAccountPassword(ctx context.Context, password string) error {
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
	if password == "" || utf8.RuneCountInString(password) > MaxLoginPasswordLength {
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
	ok, err := verifyPassword(password, acct.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return ErrInvalidLogin
	}
	return nil
}

// DeleteAccountTx deletes the account, its app passwords and every session
// inside the caller's write transaction (account deletion). Access tokens
// already issued fail afterwards because there is no account to match.
func (s *Store) DeleteAccountTx(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketAccount, bucketAppPasswords, bucketRefresh} {
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return fmt.Errorf("auth: deleting %s: %w", b, err)
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	return nil
}
