package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	iauth "github.com/bluesky-social/indigo/atproto/auth"
	atid "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/pdsbox/pds/auth"
)

const (
	svcIss = syntax.DID("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
	svcAud = "did:web:api.bsky.app"
)

func svcK256(t *testing.T) atcrypto.PrivateKey {
	t.Helper()
	k, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func svcPub(t *testing.T, k atcrypto.PrivateKey) atcrypto.PublicKey {
	t.Helper()
	p, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func svcSegments(t *testing.T, tok string) (hdr, claims map[string]any, sig []byte) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT: %q", tok)
	}
	for i, dst := range []*map[string]any{&hdr, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	return hdr, claims, sig
}

// secp256k1's group order, for the low-S check.
var k256N, _ = new(big.Int).SetString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)

// TestSignServiceJWT: the token is the reference's: header {typ: JWT, alg},
// claims iat, iss, bare aud, exp = iat + ttl, lxm (absent when empty), a
// 16-byte hex jti, and a 64-byte low-S signature over the signing input.
func TestSignServiceJWT(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		key     atcrypto.PrivateKey
		lxm     string
		ttl     time.Duration
		wantAlg string
	}{
		{"K-256 with lxm", svcK256(t), "app.bsky.feed.getTimeline", time.Minute, "ES256K"},
		{"K-256 without lxm", svcK256(t), "", time.Minute, "ES256K"},
		{"K-256, 30 minutes", svcK256(t), "com.atproto.repo.uploadBlob", 30 * time.Minute, "ES256K"},
		{"P-256", p256, "app.bsky.feed.getTimeline", time.Minute, "ES256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			for range 20 {
				tok, err := auth.SignServiceJWT(tc.key, svcIss, svcAud, tc.lxm, tc.ttl, now)
				if err != nil {
					t.Fatal(err)
				}
				hdr, c, sig := svcSegments(t, tok)
				if len(hdr) != 2 || hdr["typ"] != "JWT" || hdr["alg"] != tc.wantAlg {
					t.Fatalf("header %v", hdr)
				}
				if c["iss"] != svcIss.String() || c["aud"] != svcAud || c["iat"] != float64(now.Unix()) || c["exp"] != float64(now.Add(tc.ttl).Unix()) {
					t.Fatalf("claims %v", c)
				}
				if lxm, has := c["lxm"]; has != (tc.lxm != "") || (has && lxm != tc.lxm) {
					t.Fatalf("lxm %v, want %q", lxm, tc.lxm)
				}
				jti, _ := c["jti"].(string)
				if _, err := hex.DecodeString(jti); err != nil || len(jti) != 32 || seen[jti] {
					t.Fatalf("jti %q (repeated: %v)", jti, seen[jti])
				}
				seen[jti] = true
				wantClaims := 5 // iat iss aud exp jti
				if tc.lxm != "" {
					wantClaims++
				}
				if len(c) != wantClaims {
					t.Fatalf("unexpected claims %v", c)
				}
				if len(sig) != 64 {
					t.Fatalf("signature of %d bytes", len(sig))
				}
				if tc.wantAlg == "ES256K" {
					if s := new(big.Int).SetBytes(sig[32:]); s.Cmp(new(big.Int).Rsh(k256N, 1)) > 0 {
						t.Fatal("high-S signature")
					}
				}
				input := tok[:strings.LastIndexByte(tok, '.')]
				if err := svcPub(t, tc.key).HashAndVerify([]byte(input), sig); err != nil {
					t.Fatalf("signature: %v", err)
				}
			}
		})
	}
}

// TestServiceJWTIndigo: our tokens pass indigo's validator (as the AppView
// and other Go services check them), and indigo's tokens pass ours.
func TestServiceJWTIndigo(t *testing.T) {
	key := svcK256(t)
	dir := atid.NewMockDirectory()
	dir.Insert(atid.Identity{DID: svcIss, Handle: "alice.test", Keys: map[string]atid.VerificationMethod{
		"atproto": {Type: "Multikey", PublicKeyMultibase: svcPub(t, key).Multibase()},
	}})
	lxm := syntax.NSID("app.bsky.feed.getTimeline")

	tok, err := auth.SignServiceJWT(key, svcIss, svcAud, lxm.String(), time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v := iauth.ServiceAuthValidator{Audience: svcAud, Dir: dir}
	if iss, err := v.Validate(context.Background(), tok, &lxm); err != nil || iss != svcIss {
		t.Fatalf("indigo refused our token: %v", err)
	}
	other := syntax.NSID("app.bsky.feed.getAuthorFeed")
	if _, err := v.Validate(context.Background(), tok, &other); err == nil {
		t.Fatal("indigo accepted our token for another method")
	}
	if _, err := (&iauth.ServiceAuthValidator{Audience: "did:web:other.test", Dir: dir}).Validate(context.Background(), tok, &lxm); err == nil {
		t.Fatal("indigo accepted our token for another audience")
	}

	theirs, err := iauth.SignServiceAuth(svcIss, svcAud, time.Minute, &lxm, key)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(context.Context, syntax.DID, bool) (atcrypto.PublicKey, error) { return svcPub(t, key), nil }
	if iss, err := auth.VerifyServiceJWT(context.Background(), theirs, svcAud, lxm.String(), keys, time.Now()); err != nil || iss != svcIss {
		t.Fatalf("we refused indigo's token: %v", err)
	}
}

// svcForge signs a token with arbitrary header and claims.
func svcForge(t *testing.T, key atcrypto.PrivateKey, hdr, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(hdr) + "." + enc(claims)
	sig, err := key.HashAndSign([]byte(input))
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestVerifyServiceJWT(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	key, rotated, stranger := svcK256(t), svcK256(t), svcK256(t)
	p256, err := atcrypto.GeneratePrivateKeyP256()
	if err != nil {
		t.Fatal(err)
	}
	const upload = "com.atproto.repo.uploadBlob"
	const us = "did:web:pds.example.com"
	good := map[string]any{"iss": svcIss.String(), "aud": us, "iat": now.Unix(), "exp": now.Unix() + 60, "lxm": upload, "jti": "00"}
	hdr := map[string]any{"typ": "JWT", "alg": "ES256K"}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{}
		for kk, vv := range m {
			out[kk] = vv
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	signed := func(k atcrypto.PrivateKey, h, c map[string]any) string { return svcForge(t, k, h, c) }
	cases := []struct {
		name  string
		token string
		keyOf map[bool]atcrypto.PrivateKey // the resolver's key without and with refresh
		lxm   string
		ok    bool
	}{
		{"valid", signed(key, hdr, good), nil, upload, true},
		{"valid, minted by SignServiceJWT", func() string {
			tok, _ := auth.SignServiceJWT(key, svcIss, us, upload, time.Minute, now)
			return tok
		}(), nil, upload, true},
		{"no lxm required", signed(key, hdr, with(good, "lxm", nil)), nil, "", true},
		{"iss with a service fragment", signed(key, hdr, with(good, "iss", svcIss.String()+"#atproto_labeler")), nil, upload, true},
		{"key rotated: refetched once", signed(rotated, hdr, good), map[bool]atcrypto.PrivateKey{false: key, true: rotated}, upload, true},
		{"P-256, ES256", signed(p256, with(hdr, "alg", "ES256"), good), map[bool]atcrypto.PrivateKey{false: p256, true: p256}, upload, true},
		{"no lxm in the token", signed(key, hdr, with(good, "lxm", nil)), nil, upload, false},
		{"another lxm", signed(key, hdr, with(good, "lxm", "com.atproto.repo.createRecord")), nil, upload, false},
		{"another aud", signed(key, hdr, with(good, "aud", "did:web:other.example.com")), nil, upload, false},
		{"aud with a fragment", signed(key, hdr, with(good, "aud", us+"#atproto_pds")), nil, upload, false},
		{"aud as an array", signed(key, hdr, with(good, "aud", []string{us})), nil, upload, false},
		{"expired", signed(key, hdr, with(good, "exp", now.Unix()-1)), nil, upload, false},
		{"expiring now", signed(key, hdr, with(good, "exp", now.Unix())), nil, upload, false},
		{"no exp", signed(key, hdr, with(good, "exp", nil)), nil, upload, false},
		{"iss not a DID", signed(key, hdr, with(good, "iss", "alice.test")), nil, upload, false},
		{"signed by a stranger", signed(stranger, hdr, good), nil, upload, false},
		{"typ at+jwt", signed(key, with(hdr, "typ", "at+jwt"), good), nil, upload, false},
		{"typ refresh+jwt", signed(key, with(hdr, "typ", "refresh+jwt"), good), nil, upload, false},
		{"typ dpop+jwt", signed(key, with(hdr, "typ", "dpop+jwt"), good), nil, upload, false},
		{"alg HS256", signed(key, with(hdr, "alg", "HS256"), good), nil, upload, false},
		{"alg none", strings.TrimRight(signed(key, with(hdr, "alg", "none"), good), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), nil, upload, false},
		{"alg ES256 on a K-256 key", signed(key, with(hdr, "alg", "ES256"), good), nil, upload, false},
		{"two segments", strings.Join(strings.Split(signed(key, hdr, good), ".")[:2], "."), nil, upload, false},
		{"bad signature encoding", signed(key, hdr, good) + "!", nil, upload, false},
		{"claims not JSON", "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NksifQ.bm90IGpzb24.AAAA", nil, upload, false},
		// Issue 9: lifetime bounded as getServiceAuth grants it.
		{"valid for an hour", signed(key, hdr, with(good, "exp", now.Unix()+3600)), nil, upload, true},
		{"valid for ten years", signed(key, hdr, with(good, "exp", now.Add(10*365*24*time.Hour).Unix())), nil, upload, false},
		{"valid for two hours", signed(key, hdr, with(good, "exp", now.Unix()+7200)), nil, upload, false},
		{"issued in the future", signed(key, hdr, with(good, "iat", now.Unix()+600)), nil, upload, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			keys := func(_ context.Context, did syntax.DID, refresh bool) (atcrypto.PublicKey, error) {
				calls++
				if did != svcIss {
					return nil, errors.New("unknown DID")
				}
				k := key
				if tc.keyOf != nil {
					k = tc.keyOf[refresh]
				}
				return svcPub(t, k), nil
			}
			iss, err := auth.VerifyServiceJWT(context.Background(), tc.token, us, tc.lxm, keys, now)
			if tc.ok != (err == nil) {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, auth.ErrServiceAuth) {
					t.Fatalf("%v does not wrap ErrServiceAuth", err)
				}
				return
			}
			if iss != svcIss {
				t.Fatalf("iss %s", iss)
			}
			if calls > 2 {
				t.Fatalf("%d key lookups", calls)
			}
		})
	}
}
