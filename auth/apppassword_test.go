package auth

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

var appPasswordFormat = regexp.MustCompile(`^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$`)

func TestAppPasswords(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestStore(t)
	if _, err := s.CreateAppPassword(ctx, "phone", false); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("CreateAppPassword without account = %v", err)
	}
	s, clk = newTestAccount(t)

	phone, err := s.CreateAppPassword(ctx, "  phone ", false)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	chat, err := s.CreateAppPassword(ctx, "chat client", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, ap := range []*AppPassword{phone, chat} {
		if !appPasswordFormat.MatchString(ap.Password) {
			t.Errorf("password %q is not xxxx-xxxx-xxxx-xxxx", ap.Password)
		}
	}
	if phone.Name != "phone" || phone.Privileged || !chat.Privileged || phone.Password == chat.Password {
		t.Errorf("created %+v, %+v", phone, chat)
	}

	for _, tc := range []struct {
		name string
		want error
	}{
		{"phone", ErrAppPasswordExists},
		{" phone", ErrAppPasswordExists},
		{"", ErrInvalidAppPasswordName},
		{"   ", ErrInvalidAppPasswordName},
		{strings.Repeat("n", MaxAppPasswordNameLength+1), ErrInvalidAppPasswordName},
	} {
		if _, err := s.CreateAppPassword(ctx, tc.name, false); !errors.Is(err, tc.want) {
			t.Errorf("CreateAppPassword(%q) = %v, want %v", tc.name, err, tc.want)
		}
	}

	list, err := s.ListAppPasswords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "chat client" || !list[0].Privileged || list[1].Name != "phone" || list[1].Privileged {
		t.Errorf("ListAppPasswords = %+v", list)
	}
	for _, ap := range list {
		if ap.Password != "" {
			t.Errorf("ListAppPasswords reveals the password of %q", ap.Name)
		}
	}

	// Logins with app passwords, by any identifier.
	tests := []struct {
		identifier, password string
		scope                Scope
		name                 string
	}{
		{testHandle, phone.Password, ScopeAppPass, "phone"},
		{testEmail, phone.Password, ScopeAppPass, "phone"},
		{testDID, chat.Password, ScopeAppPassPrivileged, "chat client"},
		{testHandle, testPassword, ScopeAccess, ""},
	}
	for _, tc := range tests {
		sess := login(t, s, tc.identifier, tc.password)
		if sess.Scope != tc.scope || sess.AppPassword != tc.name {
			t.Errorf("login with %q: scope %s, app password %q", tc.name, sess.Scope, sess.AppPassword)
		}
		if got := decodeSegment(t, sess.AccessJWT, 1)["scope"]; got != string(tc.scope) {
			t.Errorf("access token scope %v, want %s", got, tc.scope)
		}
		c, err := s.VerifyAccess(ctx, sess.AccessJWT)
		if err != nil {
			t.Fatal(err)
		}
		if c.Scope != tc.scope || c.AppPassword != tc.name {
			t.Errorf("claims %+v", c)
		}
		next, err := s.Refresh(ctx, sess.RefreshJWT)
		if err != nil {
			t.Fatal(err)
		}
		if next.Scope != tc.scope || next.AppPassword != tc.name {
			t.Errorf("refreshed session %+v", next)
		}
		if c, err := s.VerifyAccess(ctx, next.AccessJWT); err != nil || c.Scope != tc.scope || c.AppPassword != tc.name {
			t.Errorf("refreshed access: %+v, %v", c, err)
		}
	}
	if _, err := s.Login(ctx, testHandle, strings.ToUpper(phone.Password)); !errors.Is(err, ErrInvalidLogin) {
		t.Errorf("login with altered app password: %v", err)
	}
}

func TestRevokeAppPassword(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestAccount(t)
	phone, err := s.CreateAppPassword(ctx, "phone", false)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateAppPassword(ctx, "other", false)
	if err != nil {
		t.Fatal(err)
	}
	main := login(t, s, testHandle, testPassword)
	otherSess := login(t, s, testHandle, other.Password)
	first := login(t, s, testHandle, phone.Password)
	rotated, err := s.Refresh(ctx, first.RefreshJWT) // first is now in its grace period
	if err != nil {
		t.Fatal(err)
	}

	if err := s.RevokeAppPassword(ctx, "phone"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAppPassword(ctx, "phone"); !errors.Is(err, ErrAppPasswordNotFound) {
		t.Errorf("second revoke = %v, want ErrAppPasswordNotFound", err)
	}
	if _, err := s.Login(ctx, testHandle, phone.Password); !errors.Is(err, ErrInvalidLogin) {
		t.Errorf("login with revoked app password: %v", err)
	}

	// A new app password of the same name does not revive the old tokens.
	if _, err := s.CreateAppPassword(ctx, "phone", false); err != nil {
		t.Fatal(err)
	}
	for _, sess := range []*Session{first, rotated} {
		if _, err := s.VerifyAccess(ctx, sess.AccessJWT); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("access token of revoked app password: %v", err)
		}
		if _, err := s.Refresh(ctx, sess.RefreshJWT); !errors.Is(err, ErrTokenRevoked) {
			t.Errorf("refresh token of revoked app password: %v", err)
		}
	}
	for _, sess := range []*Session{main, otherSess} {
		if _, err := s.VerifyAccess(ctx, sess.AccessJWT); err != nil {
			t.Errorf("unrelated access token: %v", err)
		}
		if _, err := s.Refresh(ctx, sess.RefreshJWT); err != nil {
			t.Errorf("unrelated refresh token: %v", err)
		}
	}
}
