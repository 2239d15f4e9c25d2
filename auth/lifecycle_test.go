package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// TestDeleteCredentialsTx: deletion removes the account's password, its app
// passwords and sessions; an account created again for the same DID (it
// migrated back) does not accept the old tokens.
func TestDeleteCredentialsTx(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)
	if _, err := s.CreateAppPassword(ctx, "phone", false); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyAccountPassword(ctx, "wrong"); !errors.Is(err, ErrInvalidLogin) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := s.VerifyAccountPassword(ctx, testPassword); err != nil {
		t.Fatalf("password: %v", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putTestIdentity(tx, nil); err != nil {
			return err
		}
		return s.DeleteCredentialsTx(tx)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyAccountPassword(ctx, testPassword); !errors.Is(err, ErrInvalidLogin) {
		t.Fatalf("password after deletion: %v", err)
	}
	if _, err := s.VerifyAccess(ctx, sess.AccessJWT); err == nil {
		t.Fatal("access token of a deleted account verifies")
	}
	if _, err := s.Refresh(ctx, sess.RefreshJWT); err == nil {
		t.Fatal("refresh token of a deleted account works")
	}
	clk.Add(2 * time.Second)
	if err := createAccount(s, Identity{DID: testDID, Handle: syntax.Handle(testHandle)}, "another password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, sess.AccessJWT); err == nil {
		t.Fatal("an access token of the deleted account works for the new one")
	}
	aps, err := s.ListAppPasswords(ctx)
	if err != nil || len(aps) != 0 {
		t.Fatalf("app passwords after re-creation: %v %v", aps, err)
	}
	fresh := login(t, s, testHandle, "another password")
	if _, err := s.VerifyAccess(ctx, fresh.AccessJWT); err != nil {
		t.Fatalf("new session: %v", err)
	}
}
