package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

func TestCreateAccount(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestStore(t)

	if _, err := s.Account(ctx); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("Account before creation: %v, want ErrNoAccount", err)
	}
	if _, err := s.Login(ctx, testHandle, testPassword); !errors.Is(err, ErrInvalidLogin) {
		t.Fatalf("Login before creation: %v, want ErrInvalidLogin", err)
	}

	bad := []struct {
		name     string
		acct     Account
		password string
		want     error
	}{
		{"no DID", Account{Handle: testHandle}, testPassword, ErrInvalidAccount},
		{"no handle", Account{DID: testDID}, testPassword, ErrInvalidAccount},
		{"empty password", Account{DID: testDID, Handle: testHandle}, "", ErrInvalidPassword},
		{"long password", Account{DID: testDID, Handle: testHandle}, strings.Repeat("x", MaxPasswordLength+1), ErrInvalidPassword},
	}
	for _, tc := range bad {
		if err := s.CreateAccount(ctx, tc.acct, tc.password); !errors.Is(err, tc.want) {
			t.Errorf("%s: CreateAccount = %v, want %v", tc.name, err, tc.want)
		}
	}

	err := s.CreateAccount(ctx, Account{DID: testDID, Handle: "Alice.TEST", Email: "Alice@Example.com"}, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := s.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if acct.DID != testDID || acct.Handle != testHandle || acct.Email != testEmail || !acct.CreatedAt.Equal(clk.Now()) {
		t.Errorf("Account = %+v", acct)
	}

	err = s.CreateAccount(ctx, Account{DID: "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", Handle: "bob.test"}, testPassword)
	if !errors.Is(err, ErrAccountExists) {
		t.Fatalf("second CreateAccount = %v, want ErrAccountExists", err)
	}
	if acct, _ := s.Account(ctx); acct.DID != testDID {
		t.Errorf("second CreateAccount replaced the account: %+v", acct)
	}

	// The maximum password length is allowed.
	if err := s.SetPassword(ctx, strings.Repeat("é", MaxPasswordLength)); err != nil {
		t.Errorf("SetPassword(256 chars) = %v", err)
	}
}

func TestUpdateHandle(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	if err := s.UpdateHandle(ctx, "bob.test"); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("UpdateHandle without account = %v", err)
	}
	s, _ = newTestAccount(t)
	if err := s.UpdateHandle(ctx, syntax.Handle("Bob.Example.COM")); err != nil {
		t.Fatal(err)
	}
	acct, _ := s.Account(ctx)
	if acct.Handle != "bob.example.com" {
		t.Errorf("handle = %q", acct.Handle)
	}
	// Login follows the new handle.
	if _, err := s.Login(ctx, "bob.example.com", testPassword); err != nil {
		t.Errorf("Login by new handle: %v", err)
	}
	if _, err := s.Login(ctx, testHandle, testPassword); !errors.Is(err, ErrInvalidLogin) {
		t.Errorf("Login by old handle: %v", err)
	}
}

func TestLogin(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestAccount(t)
	tests := []struct {
		name       string
		identifier string
		password   string
		ok         bool
	}{
		{"handle", testHandle, testPassword, true},
		{"handle, other case", "ALICE.Test", testPassword, true},
		{"email", testEmail, testPassword, true},
		{"email, other case", "ALICE@EXAMPLE.COM", testPassword, true},
		{"DID", testDID, testPassword, true},
		{"surrounding space", " alice.test ", testPassword, true},
		{"wrong password", testHandle, testPassword + "!", false},
		{"password case", testHandle, strings.ToUpper(testPassword), false},
		{"empty password", testHandle, "", false},
		{"too long password", testHandle, strings.Repeat("a", MaxLoginPasswordLength+1), false},
		{"unknown handle", "bob.test", testPassword, false},
		{"unknown email", "bob@example.com", testPassword, false},
		{"handle taken as email", "alice.test@", testPassword, false},
		{"unknown DID", "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", testPassword, false},
		{"empty identifier", "", testPassword, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sess, err := s.Login(ctx, tc.identifier, tc.password)
			if !tc.ok {
				if !errors.Is(err, ErrInvalidLogin) {
					t.Fatalf("Login = %v, want ErrInvalidLogin", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sess.DID != testDID || sess.Handle != testHandle || sess.Email != testEmail || sess.Scope != ScopeAccess || sess.AppPassword != "" {
				t.Errorf("session = %+v", sess)
			}
			c, err := s.VerifyAccess(ctx, sess.AccessJWT)
			if err != nil {
				t.Fatalf("VerifyAccess: %v", err)
			}
			if c.DID != testDID || c.Scope != ScopeAccess || c.AppPassword != "" || c.ExpiresAt.Sub(c.IssuedAt) != AccessTokenLifetime {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}

func TestSetPassword(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	old := login(t, s, testHandle, testPassword)
	ap, err := s.CreateAppPassword(ctx, "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	apSess := login(t, s, testHandle, ap.Password)

	for _, p := range []string{"", strings.Repeat("x", MaxPasswordLength+1)} {
		if err := s.SetPassword(ctx, p); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("SetPassword(%d chars) = %v", len(p), err)
		}
	}
	clk.Add(time.Second)
	if err := s.SetPassword(ctx, "new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login(ctx, testHandle, testPassword); !errors.Is(err, ErrInvalidLogin) {
		t.Errorf("old password: %v", err)
	}
	fresh := login(t, s, testHandle, "new password")
	if _, err := s.VerifyAccess(ctx, fresh.AccessJWT); err != nil {
		t.Errorf("new session: %v", err)
	}
	// App passwords survive a password change, their sessions do not.
	login(t, s, testHandle, ap.Password)
	for name, sess := range map[string]*Session{"main": old, "app password": apSess} {
		if _, err := s.VerifyAccess(ctx, sess.AccessJWT); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s access token after SetPassword: %v", name, err)
		}
		if _, err := s.Refresh(ctx, sess.RefreshJWT); !errors.Is(err, ErrTokenRevoked) {
			t.Errorf("%s refresh token after SetPassword: %v", name, err)
		}
	}
}
