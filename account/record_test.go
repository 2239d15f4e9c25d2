package account_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/internal/testpds"
)

// TestCreateRecord: account creation over HTTP stores one record (handle
// and email lowercased), with the password rule counted in characters (the
// one rule, auth.ValidatePassword); a second account is refused and leaves
// the first as it was.
func TestCreateRecord(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	ctx := context.Background()
	if _, err := s.Accounts.Account(ctx); !errors.Is(err, account.ErrNoAccount) {
		t.Fatalf("Account before creation: %v", err)
	}
	code, err := s.Accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	create := func(handle, email, password string) (int, map[string]any) {
		return s.Call(t, "POST", "com.atproto.server.createAccount", "", map[string]any{
			"handle": handle, "email": email, "password": password, "inviteCode": code,
		})
	}
	refused := []struct {
		name, handle, email, password, wantErr string
	}{
		{"too long password", "alice.test", "alice@example.com", strings.Repeat("é", auth.MaxPasswordLength+1), "InvalidRequest"},
		{"empty password", "alice.test", "alice@example.com", "", "InvalidRequest"},
		{"bad handle", "alice..test", "alice@example.com", "hunter2-hunter2", "InvalidHandle"},
		{"bad email", "alice.test", "Alice <alice@example.com>", "hunter2-hunter2", "InvalidRequest"},
	}
	for _, tc := range refused {
		st, out := create(tc.handle, tc.email, tc.password)
		if st != 400 || out["error"] != tc.wantErr {
			t.Errorf("%s: %d %v, want 400 %s", tc.name, st, out, tc.wantErr)
		}
	}
	// 256 characters, 512 bytes: allowed.
	password := strings.Repeat("é", auth.MaxPasswordLength)
	st, out := create("Alice.TEST", "Alice@Example.com", password)
	if st != 200 {
		t.Fatalf("createAccount: %d %v", st, out)
	}
	acct, err := s.Accounts.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if acct.DID.String() != out["did"] || acct.Handle != "alice.test" || acct.Email != "alice@example.com" || acct.CreatedAt.IsZero() || !acct.EmailConfirmedAt.IsZero() {
		t.Fatalf("record = %+v", acct)
	}
	st, out = s.Call(t, "POST", "com.atproto.server.createSession", "", map[string]any{"identifier": "ALICE@example.com", "password": password})
	if st != 200 || out["handle"] != "alice.test" {
		t.Fatalf("createSession: %d %v", st, out)
	}
	if _, _, err := s.Accounts.Create(ctx, account.CreateParams{Handle: "bob.test", Password: "hunter2-hunter2"}); !errors.Is(err, account.ErrAccountExists) {
		t.Fatalf("second Create = %v, want ErrAccountExists", err)
	}
	if again, _ := s.Accounts.Account(ctx); *again != *acct {
		t.Fatalf("second Create changed the record: %+v", again)
	}
}
