package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestTimeClaims holds each time claim of both session token kinds to the
// clock, one row per claim: a token signed with the right secret but
// issued, or valid only, in the future beyond ClockSkew is refused, within
// the skew it is accepted, and an expired one is ExpiredToken.
func TestTimeClaims(t *testing.T) {
	ctx := context.Background()
	s, clk := newTestAccount(t)
	sess := login(t, s, testHandle, testPassword)
	now := clk.Now().Unix()
	skew := int64(ClockSkew / time.Second)
	jti := jtiOf(t, sess.RefreshJWT)

	kinds := []struct {
		name   string
		header map[string]any
		claims func() map[string]any
		verify func(tok string) error
	}{
		{"access", map[string]any{"alg": "HS256", "typ": "at+jwt"},
			func() map[string]any {
				return map[string]any{"scope": "com.atproto.access", "aud": testService, "sub": testDID, "iat": now, "exp": now + 7200}
			},
			func(tok string) error { _, err := s.VerifyAccess(ctx, tok); return err }},
		// Refresh tokens are checked with RevokeSession's parse, which
		// refreshes nothing, so every row sees the same stored token.
		{"refresh", map[string]any{"alg": "HS256", "typ": "refresh+jwt"},
			func() map[string]any {
				return map[string]any{"scope": "com.atproto.refresh", "aud": testService, "sub": testDID, "jti": jti, "iat": now, "exp": now + 7200}
			},
			func(tok string) error { _, err := s.parseRefresh(tok); return err }},
	}
	rows := []struct {
		name string
		edit map[string]any
		want error // nil: accepted
	}{
		{"baseline", nil, nil},
		{"nbf now", map[string]any{"nbf": now}, nil},
		{"nbf within the skew", map[string]any{"nbf": now + skew}, nil},
		{"nbf in the future", map[string]any{"nbf": now + skew + 1}, ErrInvalidToken},
		{"nbf an hour ahead", map[string]any{"nbf": now + 3600}, ErrInvalidToken},
		{"nbf not a number", map[string]any{"nbf": "later"}, ErrInvalidToken},
		{"iat within the skew", map[string]any{"iat": now + skew}, nil},
		{"iat in the future", map[string]any{"iat": now + skew + 1}, ErrInvalidToken},
		{"iat a day ahead", map[string]any{"iat": now + 86400, "exp": now + 90000}, ErrInvalidToken},
		{"iat not a number", map[string]any{"iat": "now"}, ErrInvalidToken},
		{"exp before iat", map[string]any{"iat": now, "exp": now - 10}, ErrExpiredToken},
		{"exp equal to iat", map[string]any{"iat": now - 10, "exp": now - 10}, ErrExpiredToken},
		{"exp passed", map[string]any{"iat": now - 7200, "exp": now - 1}, ErrExpiredToken},
		{"exp now", map[string]any{"exp": now}, ErrExpiredToken},
		{"exp not a number", map[string]any{"exp": "never"}, ErrInvalidToken},
		{"exp a float", map[string]any{"exp": float64(now) + 0.5}, ErrInvalidToken},
	}
	for _, k := range kinds {
		for _, r := range rows {
			t.Run(k.name+"/"+r.name, func(t *testing.T) {
				c := k.claims()
				for kk, v := range r.edit {
					c[kk] = v
				}
				err := k.verify(craftHS256(k.header, c, testSecret))
				if r.want == nil {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					return
				}
				if !errors.Is(err, r.want) {
					t.Fatalf("err = %v, want %v", err, r.want)
				}
			})
		}
	}
}
