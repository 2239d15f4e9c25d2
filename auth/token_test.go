package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	bolt "go.etcd.io/bbolt"
)

func TestTokenShape(t *testing.T) {
	s, clk := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)
	iat := float64(clk.Now().Unix())

	tests := []struct {
		name   string
		token  string
		header map[string]any
		claims map[string]any
	}{
		{"access", sess.AccessJWT,
			map[string]any{"alg": "HS256", "typ": "at+jwt"},
			map[string]any{"scope": "com.atproto.access", "aud": testService, "sub": testDID, "iat": iat, "exp": iat + 2*3600}},
		{"refresh", sess.RefreshJWT,
			map[string]any{"alg": "HS256", "typ": "refresh+jwt"},
			map[string]any{"scope": "com.atproto.refresh", "aud": testService, "sub": testDID, "iat": iat, "exp": iat + 90*24*3600, "jti": jtiOf(t, sess.RefreshJWT)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if h := decodeSegment(t, tc.token, 0); !maps.Equal(h, tc.header) {
				t.Errorf("header = %v, want %v", h, tc.header)
			}
			if c := decodeSegment(t, tc.token, 1); !maps.Equal(c, tc.claims) {
				t.Errorf("claims = %v, want %v", c, tc.claims)
			}
		})
	}
	raw, err := base64.RawURLEncoding.DecodeString(jtiOf(t, sess.RefreshJWT))
	if err != nil || len(raw) != 32 {
		t.Errorf("jti is not base64url of 32 bytes: %v, %d bytes", err, len(raw))
	}
	if other := login(t, s, testHandle, testPassword); jtiOf(t, other.RefreshJWT) == jtiOf(t, sess.RefreshJWT) {
		t.Error("two logins share a jti")
	}
}

func TestTokenRejected(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)
	now := clk.Now().Unix()

	accessHeader := map[string]any{"alg": "HS256", "typ": "at+jwt"}
	refreshHeader := map[string]any{"alg": "HS256", "typ": "refresh+jwt"}
	access := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"scope": "com.atproto.access", "aud": testService, "sub": testDID, "iat": now, "exp": now + 7200}
		if edit != nil {
			edit(c)
		}
		return c
	}
	refresh := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"scope": "com.atproto.refresh", "aud": testService, "sub": testDID, "jti": jtiOf(t, sess.RefreshJWT), "iat": now, "exp": now + 7200}
		if edit != nil {
			edit(c)
		}
		return c
	}
	hs512 := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims(access(nil)))
	hs512.Header["typ"] = "at+jwt"
	hs512Token, err := hs512.SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}

	// The crafted baselines are accepted, so each case below fails for its
	// one change.
	if _, err := s.VerifyAccess(ctx, craftHS256(accessHeader, access(nil), testSecret)); err != nil {
		t.Fatalf("crafted access token: %v", err)
	}

	accessCases := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "not a token"},
		{"two parts", "eyJhbGciOiJIUzI1NiJ9.e30"},
		{"bad base64", "a!b.c!d.e!f"},
		{"alg none", craftHS256(map[string]any{"alg": "none", "typ": "at+jwt"}, access(nil), nil)},
		{"alg none, signed", craftHS256(map[string]any{"alg": "none", "typ": "at+jwt"}, access(nil), testSecret)},
		{"no alg", craftHS256(map[string]any{"typ": "at+jwt"}, access(nil), testSecret)},
		{"other secret", craftHS256(accessHeader, access(nil), []byte("another secret"))},
		{"HS512", hs512Token},
		{"tampered payload", sess.AccessJWT[:len(sess.AccessJWT)-1] + "A"},
		{"refresh token", sess.RefreshJWT},
		{"typ JWT", craftHS256(map[string]any{"alg": "HS256", "typ": "JWT"}, access(nil), testSecret)},
		{"no typ", craftHS256(map[string]any{"alg": "HS256"}, access(nil), testSecret)},
		{"typ refresh, scope access", craftHS256(refreshHeader, access(nil), testSecret)},
		{"scope refresh, typ access", craftHS256(accessHeader, access(func(c map[string]any) { c["scope"] = "com.atproto.refresh" }), testSecret)},
		{"scope takendown", craftHS256(accessHeader, access(func(c map[string]any) { c["scope"] = "com.atproto.takendown" }), testSecret)},
		{"no scope", craftHS256(accessHeader, access(func(c map[string]any) { delete(c, "scope") }), testSecret)},
		{"other aud", craftHS256(accessHeader, access(func(c map[string]any) { c["aud"] = "did:web:other.example" }), testSecret)},
		{"aud array", craftHS256(accessHeader, access(func(c map[string]any) { c["aud"] = []string{testService} }), testSecret)},
		{"no aud", craftHS256(accessHeader, access(func(c map[string]any) { delete(c, "aud") }), testSecret)},
		{"other sub", craftHS256(accessHeader, access(func(c map[string]any) { c["sub"] = "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz" }), testSecret)},
		{"sub not a DID", craftHS256(accessHeader, access(func(c map[string]any) { c["sub"] = testHandle }), testSecret)},
		{"no exp", craftHS256(accessHeader, access(func(c map[string]any) { delete(c, "exp") }), testSecret)},
		{"no iat", craftHS256(accessHeader, access(func(c map[string]any) { delete(c, "iat") }), testSecret)},
		{"lxm", craftHS256(accessHeader, access(func(c map[string]any) { c["lxm"] = "com.atproto.repo.createRecord" }), testSecret)},
		{"cnf", craftHS256(accessHeader, access(func(c map[string]any) { c["cnf"] = map[string]any{"jkt": "x"} }), testSecret)},
		{"app password scope without id", craftHS256(accessHeader, access(func(c map[string]any) { c["scope"] = "com.atproto.appPass" }), testSecret)},
		{"app password id with full scope", craftHS256(accessHeader, access(func(c map[string]any) { c["apid"] = "xyz" }), testSecret)},
		{"unknown app password id", craftHS256(accessHeader, access(func(c map[string]any) { c["scope"] = "com.atproto.appPass"; c["apid"] = "xyz" }), testSecret)},
		{"expired, other secret", craftHS256(accessHeader, access(func(c map[string]any) { c["exp"] = now - 1 }), []byte("another secret"))},
	}
	for _, tc := range accessCases {
		t.Run("access/"+tc.name, func(t *testing.T) {
			if c, err := s.VerifyAccess(ctx, tc.token); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("VerifyAccess = %+v, %v; want ErrInvalidToken", c, err)
			}
		})
	}

	refreshCases := []struct {
		name  string
		token string
	}{
		{"garbage", "not a token"},
		{"access token", sess.AccessJWT},
		{"alg none", craftHS256(map[string]any{"alg": "none", "typ": "refresh+jwt"}, refresh(nil), nil)},
		{"other secret", craftHS256(refreshHeader, refresh(nil), []byte("another secret"))},
		{"typ access", craftHS256(accessHeader, refresh(nil), testSecret)},
		{"scope access", craftHS256(refreshHeader, refresh(func(c map[string]any) { c["scope"] = "com.atproto.access" }), testSecret)},
		{"no jti", craftHS256(refreshHeader, refresh(func(c map[string]any) { delete(c, "jti") }), testSecret)},
		{"unknown jti", craftHS256(refreshHeader, refresh(func(c map[string]any) { c["jti"] = "AAAA" }), testSecret)},
		{"other aud", craftHS256(refreshHeader, refresh(func(c map[string]any) { c["aud"] = "did:web:other.example" }), testSecret)},
		{"other sub", craftHS256(refreshHeader, refresh(func(c map[string]any) { c["sub"] = "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz" }), testSecret)},
	}
	for _, tc := range refreshCases {
		t.Run("refresh/"+tc.name, func(t *testing.T) {
			want := ErrInvalidToken
			if tc.name == "unknown jti" {
				want = ErrTokenRevoked // a well-signed token we do not hold: revoked
			}
			if _, err := s.Refresh(ctx, tc.token); !errors.Is(err, want) {
				t.Errorf("Refresh = %v; want %v", err, want)
			}
			if err := s.RevokeSession(ctx, tc.token); tc.name != "unknown jti" && !errors.Is(err, ErrInvalidToken) {
				t.Errorf("RevokeSession = %v; want ErrInvalidToken", err)
			}
		})
	}
	// None of this harmed the real session.
	if _, err := s.Refresh(ctx, sess.RefreshJWT); err != nil {
		t.Fatalf("Refresh of the real token: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)

	clk.Add(AccessTokenLifetime - time.Second)
	if _, err := s.VerifyAccess(ctx, sess.AccessJWT); err != nil {
		t.Fatalf("access token 1s before exp: %v", err)
	}
	clk.Add(time.Second)
	if _, err := s.VerifyAccess(ctx, sess.AccessJWT); !errors.Is(err, ErrExpiredToken) {
		t.Fatalf("access token at exp: %v, want ErrExpiredToken", err)
	}
	// The refresh token still works and gives a working access token.
	next, err := s.Refresh(ctx, sess.RefreshJWT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAccess(ctx, next.AccessJWT); err != nil {
		t.Fatal(err)
	}

	// A refresh token past its exp (never rotated) is expired.
	unused := login(t, s, testHandle, testPassword)
	clk.Add(RefreshTokenLifetime)
	if _, err := s.Refresh(ctx, unused.RefreshJWT); !errors.Is(err, ErrExpiredToken) {
		t.Fatalf("refresh token at exp: %v, want ErrExpiredToken", err)
	}
	if err := s.RevokeSession(ctx, unused.RefreshJWT); !errors.Is(err, ErrExpiredToken) {
		t.Fatalf("RevokeSession of expired token: %v, want ErrExpiredToken", err)
	}
}

func TestRefreshRotation(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	s1 := login(t, s, testHandle, testPassword)

	clk.Add(time.Minute)
	s2, err := s.Refresh(ctx, s1.RefreshJWT)
	if err != nil {
		t.Fatal(err)
	}
	if s2.AccessJWT == s1.AccessJWT || s2.RefreshJWT == s1.RefreshJWT || jtiOf(t, s2.RefreshJWT) == jtiOf(t, s1.RefreshJWT) {
		t.Fatal("rotation returned the old tokens")
	}
	if s2.DID != testDID || s2.Handle != testHandle || s2.Scope != ScopeAccess {
		t.Errorf("session = %+v", s2)
	}
	if _, err := s.VerifyAccess(ctx, s2.AccessJWT); err != nil {
		t.Fatal(err)
	}

	// Reuse within the grace period: the same successor jti.
	clk.Add(RefreshGracePeriod - time.Minute)
	s3, err := s.Refresh(ctx, s1.RefreshJWT)
	if err != nil {
		t.Fatalf("reuse within grace: %v", err)
	}
	if jtiOf(t, s3.RefreshJWT) != jtiOf(t, s2.RefreshJWT) {
		t.Errorf("reuse within grace gave jti %s, want %s", jtiOf(t, s3.RefreshJWT), jtiOf(t, s2.RefreshJWT))
	}

	// The successor rotates on its own.
	s4, err := s.Refresh(ctx, s2.RefreshJWT)
	if err != nil {
		t.Fatal(err)
	}
	if jtiOf(t, s4.RefreshJWT) == jtiOf(t, s2.RefreshJWT) {
		t.Error("successor did not rotate")
	}

	// After the grace period the old token is dead (its exp is 90 days
	// away, so this is the stored expiry at work).
	clk.Add(time.Minute)
	if _, err := s.Refresh(ctx, s1.RefreshJWT); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("reuse after grace: %v, want ErrTokenRevoked", err)
	}
	// And the expired record was tidied away.
	if err := s.db.View(func(tx *bolt.Tx) error {
		r, err := getRefresh(tx, jtiOf(t, s1.RefreshJWT))
		if r != nil {
			t.Error("expired refresh token still stored")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctx, s4.RefreshJWT); err != nil {
		t.Errorf("newest token: %v", err)
	}
}

func TestRefreshConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)
	var wg sync.WaitGroup
	jtis := make([]string, 8)
	for i := range jtis {
		wg.Go(func() {
			next, err := s.Refresh(ctx, sess.RefreshJWT)
			if err != nil {
				t.Error(err)
				return
			}
			jtis[i] = jtiOf(t, next.RefreshJWT)
		})
	}
	wg.Wait()
	if jtis[0] == "" || slices.ContainsFunc(jtis, func(j string) bool { return j != jtis[0] }) {
		t.Errorf("concurrent refreshes gave jtis %v", jtis)
	}
}

func TestRevokeSession(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestAccount(t)
	other := login(t, s, testHandle, testPassword)
	s1 := login(t, s, testHandle, testPassword)
	s2, err := s.Refresh(ctx, s1.RefreshJWT)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		revoke string
		dead   []string
	}{
		// Revoking the newest token also kills its predecessor in grace,
		// which would otherwise hand out the revoked successor again.
		{"newest", s2.RefreshJWT, []string{s1.RefreshJWT, s2.RefreshJWT}},
		{"again", s2.RefreshJWT, []string{s1.RefreshJWT, s2.RefreshJWT}},
	}
	for _, tc := range tests {
		if err := s.RevokeSession(ctx, tc.revoke); err != nil {
			t.Fatalf("%s: RevokeSession = %v", tc.name, err)
		}
		for i, tok := range tc.dead {
			if _, err := s.Refresh(ctx, tok); !errors.Is(err, ErrTokenRevoked) {
				t.Errorf("%s: token %d still refreshes: %v", tc.name, i, err)
			}
		}
	}

	// Revoking the old token of a chain kills its successor too.
	s3 := login(t, s, testHandle, testPassword)
	s4, err := s.Refresh(ctx, s3.RefreshJWT)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, s3.RefreshJWT); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctx, s4.RefreshJWT); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("successor of revoked token: %v", err)
	}

	if _, err := s.Refresh(ctx, other.RefreshJWT); err != nil {
		t.Errorf("unrelated session: %v", err)
	}
}
