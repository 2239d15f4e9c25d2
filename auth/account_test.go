package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestCreateCredentials: the password rule of a new account (characters,
// not bytes), and logins before and after the account exists.
func TestCreateCredentials(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	if _, err := s.Login(ctx, testHandle, testPassword); !errors.Is(err, ErrInvalidLogin) {
		t.Fatalf("Login before creation: %v, want ErrInvalidLogin", err)
	}
	for _, p := range []string{"", strings.Repeat("x", MaxPasswordLength+1), strings.Repeat("é", MaxPasswordLength+1)} {
		if _, err := s.HashNewPassword(ctx, p); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("HashNewPassword(%d chars) = %v, want ErrInvalidPassword", len([]rune(p)), err)
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return s.CreateCredentialsTx(tx, PasswordHash{}) }); !errors.Is(err, ErrInvalidPassword) {
		t.Errorf("CreateCredentialsTx(unhashed) = %v", err)
	}
	// The maximum length is allowed, counted in characters (512 bytes).
	long := strings.Repeat("é", MaxPasswordLength)
	if err := createAccount(s, Identity{DID: testDID, Handle: testHandle}, long); err != nil {
		t.Fatalf("creating with %d characters: %v", MaxPasswordLength, err)
	}
	if _, err := s.Login(ctx, testHandle, long); err != nil {
		t.Errorf("Login with the long password: %v", err)
	}
}

// TestLoginFollowsIdentity: auth reads the handle and email from the
// account's record at each login.
func TestLoginFollowsIdentity(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestAccount(t)
	id := Identity{DID: testDID, Handle: "bob.example.com", Email: "bob@example.com"}
	if err := s.db.Update(func(tx *bolt.Tx) error { return putTestIdentity(tx, &id) }); err != nil {
		t.Fatal(err)
	}
	for _, ident := range []string{"bob.example.com", "BOB@example.com", testDID} {
		if _, err := s.Login(ctx, ident, testPassword); err != nil {
			t.Errorf("Login(%q): %v", ident, err)
		}
	}
	for _, ident := range []string{testHandle, testEmail} {
		if _, err := s.Login(ctx, ident, testPassword); !errors.Is(err, ErrInvalidLogin) {
			t.Errorf("Login by old %q: %v", ident, err)
		}
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
		if err := setPassword(s, p); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("SetPassword(%d chars) = %v", len(p), err)
		}
	}
	clk.Add(time.Second)
	if err := setPassword(s, "new password"); err != nil {
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
