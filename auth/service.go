package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Service-auth JWTs: short tokens an account signs with its repo key to call
// another service (the AppView, a feed generator, the video service) as
// itself. Written here rather than taken from indigo's atproto/auth, whose
// init re-registers golang-jwt's ES256 globally.

// ErrServiceAuth is wrapped by every inbound service-auth failure.
var ErrServiceAuth = errors.New("invalid service auth token")

// ServiceClaims are the claims of a service-auth JWT.
type ServiceClaims struct {
	Iss string `json:"iss"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	// Nbf is optional; a token that carries it is held to it.
	Nbf int64  `json:"nbf,omitempty"`
	Lxm string `json:"lxm,omitempty"`
	Jti string `json:"jti,omitempty"`
}

var svcB64 = base64.RawURLEncoding

// jwtAlg is the JWS algorithm name of a key's curve.
func jwtAlg(k atcrypto.PublicKey) (string, error) {
	switch k.(type) {
	case *atcrypto.PublicKeyK256:
		return "ES256K", nil
	case *atcrypto.PublicKeyP256:
		return "ES256", nil
	}
	return "", fmt.Errorf("unsupported key type %T", k)
}

// SignServiceJWT mints a service-auth token as the reference PDS does:
// header {"typ":"JWT","alg":"ES256K"}, claims iat, iss, aud (a bare service
// DID), exp, lxm (omitted when empty) and a random jti, signed with low-S
// compact ECDSA over the sha256 of the signing input.
func SignServiceJWT(key atcrypto.PrivateKey, iss syntax.DID, aud, lxm string, ttl time.Duration, now time.Time) (string, error) {
	pub, err := key.PublicKey()
	if err != nil {
		return "", err
	}
	alg, err := jwtAlg(pub)
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := ServiceClaims{Iss: iss.String(), Aud: aud, Iat: now.Unix(), Exp: now.Add(ttl).Unix(), Lxm: lxm, Jti: hex.EncodeToString(jti[:])}
	hb, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": alg})
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := svcB64.EncodeToString(hb) + "." + svcB64.EncodeToString(cb)
	sig, err := key.HashAndSign([]byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + svcB64.EncodeToString(sig), nil
}

// KeyResolver returns the #atproto signing key of a DID. refresh asks for a
// fresh lookup (after a failed signature, the key may have rotated).
type KeyResolver func(ctx context.Context, did syntax.DID, refresh bool) (atcrypto.PublicKey, error)

// VerifyServiceJWT checks an inbound service-auth token: ES256K or ES256,
// not a session or DPoP token, aud equal to audience, lxm equal to lxm (when
// the token names one it must match; when lxm is required the token must
// name it), not expired, iat and nbf not beyond ClockSkew in the future,
// and signed by iss's key. It returns the issuer.
func VerifyServiceJWT(ctx context.Context, token, audience, lxm string, keys KeyResolver, now time.Time) (syntax.DID, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%w: malformed", ErrServiceAuth)
	}
	var hdr struct {
		Typ string `json:"typ"`
		Alg string `json:"alg"`
	}
	if err := decodeServiceSegment(parts[0], &hdr); err != nil {
		return "", err
	}
	switch hdr.Typ {
	case "at+jwt", "refresh+jwt", "dpop+jwt":
		return "", fmt.Errorf("%w: a %s is not a service token", ErrServiceAuth, hdr.Typ)
	}
	if hdr.Alg != "ES256K" && hdr.Alg != "ES256" {
		return "", fmt.Errorf("%w: alg %q", ErrServiceAuth, hdr.Alg)
	}
	var c ServiceClaims
	if err := decodeServiceSegment(parts[1], &c); err != nil {
		return "", err
	}
	iss, err := syntax.ParseDID(strings.SplitN(c.Iss, "#", 2)[0])
	if err != nil {
		return "", fmt.Errorf("%w: iss: %v", ErrServiceAuth, err)
	}
	if c.Aud != audience {
		return "", fmt.Errorf("%w: aud %q, not %q", ErrServiceAuth, c.Aud, audience)
	}
	if c.Exp == 0 || now.Unix() >= c.Exp {
		return "", fmt.Errorf("%w: expired", ErrServiceAuth)
	}
	// iat is optional, as the reference has it; when present it is held to
	// the clock like nbf.
	if limit := now.Add(ClockSkew).Unix(); c.Iat > limit || c.Nbf > limit {
		return "", fmt.Errorf("%w: issued or valid only in the future", ErrServiceAuth)
	}
	if lxm != "" && c.Lxm != lxm {
		return "", fmt.Errorf("%w: lxm %q, not %q", ErrServiceAuth, c.Lxm, lxm)
	}
	sig, err := svcB64.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("%w: signature encoding", ErrServiceAuth)
	}
	input := []byte(parts[0] + "." + parts[1])
	for _, refresh := range []bool{false, true} {
		pub, err := keys(ctx, iss, refresh)
		if err != nil {
			return "", fmt.Errorf("%w: resolving %s: %v", ErrServiceAuth, iss, err)
		}
		if alg, err := jwtAlg(pub); err != nil || alg != hdr.Alg {
			continue
		}
		if pub.HashAndVerify(input, sig) == nil {
			return iss, nil
		}
	}
	return "", fmt.Errorf("%w: bad signature", ErrServiceAuth)
}

func decodeServiceSegment(seg string, v any) error {
	raw, err := svcB64.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("%w: encoding", ErrServiceAuth)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %v", ErrServiceAuth, err)
	}
	return nil
}
