package auth

import (
	"context"
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestCheckAccountPassword(t *testing.T) {
	s, _ := newTestAccount(t)
	ap, err := s.CreateAppPassword(context.Background(), "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, identifier, password string
		ok                         bool
	}{
		{"handle", testHandle, testPassword, true},
		{"DID", testDID, testPassword, true},
		{"email", testEmail, testPassword, true},
		{"wrong password", testHandle, testPassword + "x", false},
		{"app password", testHandle, ap.Password, false},
		{"other handle", "bob.test", testPassword, false},
		{"empty password", testHandle, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.CheckAccountPassword(context.Background(), tc.identifier, tc.password)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrInvalidLogin) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// No session was started by any check.
	var n int
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketRefresh).Stats().KeyN; return nil }); err != nil || n != 0 {
		t.Fatalf("%d refresh tokens stored (%v)", n, err)
	}
}
