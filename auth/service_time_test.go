package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
)

// TestServiceJWTTimeClaims: inbound service-auth tokens are held to each
// time claim, one row per claim, with the same skew as session tokens.
func TestServiceJWTTimeClaims(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	skew := int64(auth.ClockSkew / time.Second)
	key := svcK256(t)
	const us, lxm = "did:web:pds.example.com", "com.atproto.repo.uploadBlob"
	hdr := map[string]any{"typ": "JWT", "alg": "ES256K"}
	keys := func(_ context.Context, did syntax.DID, _ bool) (atcrypto.PublicKey, error) {
		if did != svcIss {
			return nil, errors.New("unknown DID")
		}
		return svcPub(t, key), nil
	}
	rows := []struct {
		name string
		edit map[string]any // nil value: claim removed
		ok   bool
	}{
		{"baseline", nil, true},
		{"no iat (optional, as the reference has it)", map[string]any{"iat": nil}, true},
		{"iat within the skew", map[string]any{"iat": now.Unix() + skew}, true},
		{"iat in the future", map[string]any{"iat": now.Unix() + skew + 1}, false},
		{"iat not a number", map[string]any{"iat": "now"}, false},
		{"nbf now", map[string]any{"nbf": now.Unix()}, true},
		{"nbf within the skew", map[string]any{"nbf": now.Unix() + skew}, true},
		{"nbf in the future", map[string]any{"nbf": now.Unix() + skew + 1}, false},
		{"nbf not a number", map[string]any{"nbf": "later"}, false},
		{"exp passed", map[string]any{"exp": now.Unix() - 1}, false},
		{"exp now", map[string]any{"exp": now.Unix()}, false},
		{"no exp", map[string]any{"exp": nil}, false},
		{"exp not a number", map[string]any{"exp": "never"}, false},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			c := map[string]any{"iss": svcIss.String(), "aud": us, "iat": now.Unix(), "exp": now.Unix() + 60, "lxm": lxm, "jti": "00"}
			for k, v := range r.edit {
				if v == nil {
					delete(c, k)
				} else {
					c[k] = v
				}
			}
			_, err := auth.VerifyServiceJWT(context.Background(), svcForge(t, key, hdr, c), us, lxm, keys, now)
			if r.ok != (err == nil) {
				t.Fatalf("err %v, want ok %v", err, r.ok)
			}
			if err != nil && !errors.Is(err, auth.ErrServiceAuth) {
				t.Fatalf("%v does not wrap ErrServiceAuth", err)
			}
		})
	}
}
