package auth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/golang-jwt/jwt/v5"
)

// Scope is the scope claim of a session token.
type Scope string

// The scopes of legacy session tokens, as the reference PDS names them.
const (
	// ScopeAccess: an access token from the account password (full access).
	ScopeAccess Scope = "com.atproto.access"
	// ScopeAppPass: an access token from a normal app password.
	ScopeAppPass Scope = "com.atproto.appPass"
	// ScopeAppPassPrivileged: an access token from a privileged app password.
	ScopeAppPassPrivileged Scope = "com.atproto.appPassPrivileged"
	// ScopeRefresh: a refresh token.
	ScopeRefresh Scope = "com.atproto.refresh"
)

// Token lifetimes, as in the reference PDS.
const (
	// AccessTokenLifetime is the lifetime of an access token.
	AccessTokenLifetime = 2 * time.Hour
	// RefreshTokenLifetime is the lifetime of a refresh token.
	RefreshTokenLifetime = 90 * 24 * time.Hour
	// RefreshGracePeriod is how long a rotated refresh token stays usable;
	// using it again within that time yields the same successor token id.
	RefreshGracePeriod = 2 * time.Hour
)

// ClockSkew is how far in the future a token's iat or nbf may lie and the
// token still be accepted: clocks step (NTP), even on one host.
const ClockSkew = 30 * time.Second

// JWT header typ values.
const (
	typAccess  = "at+jwt"
	typRefresh = "refresh+jwt"
)

// Claims are the checked claims of an access token.
type Claims struct {
	DID   syntax.DID
	Scope Scope
	// AppPassword is the name of the app password the session was created
	// with; "" for the account password.
	AppPassword string
	IssuedAt    time.Time
	ExpiresAt   time.Time
}

// Session is what createSession and refreshSession answer.
type Session struct {
	DID    syntax.DID
	Handle syntax.Handle
	Email  string
	// EmailConfirmed: the email has been confirmed (confirmEmail).
	EmailConfirmed bool
	AccessJWT      string
	RefreshJWT     string
	// Scope is the scope of AccessJWT.
	Scope Scope
	// AppPassword is the app password name; "" for the account password.
	AppPassword string
}

// tokenClaims is the JSON payload of both token kinds. The field order is the
// reference PDS's claim order. aud is a plain string (golang-jwt's ClaimStrings
// would encode it as an array), iat and exp are integer seconds.
type tokenClaims struct {
	Scope Scope  `json:"scope"`
	Aud   string `json:"aud"`
	Sub   string `json:"sub"`
	JTI   string `json:"jti,omitempty"`
	IAT   int64  `json:"iat"`
	EXP   int64  `json:"exp"`
	// NBF is never issued, but a token that carries one is held to it.
	NBF int64 `json:"nbf,omitempty"`
	// AppPassID is our one claim beyond the reference's: the random id of
	// the app password an app-password access token was issued from, so that
	// revoking that app password invalidates its access tokens (and only
	// them). Clients ignore unknown claims.
	AppPassID string `json:"apid,omitempty"`
	// Lxm and Cnf are never issued; tokens carrying them (service-auth and
	// proof-of-possession tokens) are refused, as the reference does.
	Lxm json.RawMessage `json:"lxm,omitempty"`
	Cnf json.RawMessage `json:"cnf,omitempty"`
}

var _ jwt.Claims = (*tokenClaims)(nil)

func numericDate(sec int64) (*jwt.NumericDate, error) {
	if sec == 0 {
		return nil, nil
	}
	return jwt.NewNumericDate(time.Unix(sec, 0)), nil
}

// GetExpirationTime implements jwt.Claims.
func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.EXP) }

// GetIssuedAt implements jwt.Claims.
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(c.IAT) }

// GetNotBefore implements jwt.Claims.
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims.
func (c *tokenClaims) GetIssuer() (string, error) { return "", nil }

// GetSubject implements jwt.Claims.
func (c *tokenClaims) GetSubject() (string, error) { return c.Sub, nil }

// GetAudience implements jwt.Claims.
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error) {
	if c.Aud == "" {
		return nil, nil
	}
	return jwt.ClaimStrings{c.Aud}, nil
}

// sign returns the compact HS256 JWT of claims with header typ.
func (s *Store) sign(typ string, claims *tokenClaims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	t.Header["typ"] = typ
	str, err := t.SignedString(s.secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return str, nil
}

// parse verifies the signature (HS256 only), exp and header typ of a token
// and returns its claims. An expired token gives ErrExpiredToken, any other
// failure ErrInvalidToken. The caller checks scope, sub and the rest.
func (s *Store) parse(token, typ string) (*tokenClaims, error) {
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(s.now),
		jwt.WithExpirationRequired(),
		jwt.WithStrictDecoding(),
	)
	var c tokenClaims
	t, err := p.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, errors.New("unexpected signing method")
		}
		return s.secret, nil
	})
	if err != nil {
		// golang-jwt checks claims only after the signature, so an
		// expired-token error is never reported for a forged token.
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, ErrExpiredToken
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if got, _ := t.Header["typ"].(string); got != typ {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrInvalidToken, got, typ)
	}
	if c.Aud != s.serviceDID {
		return nil, fmt.Errorf("%w: wrong audience", ErrInvalidToken)
	}
	if _, err := syntax.ParseDID(c.Sub); err != nil {
		return nil, fmt.Errorf("%w: subject is not a DID", ErrInvalidToken)
	}
	if c.Lxm != nil || c.Cnf != nil {
		return nil, fmt.Errorf("%w: unexpected lxm or cnf claim", ErrInvalidToken)
	}
	if c.IAT == 0 {
		return nil, fmt.Errorf("%w: missing iat", ErrInvalidToken)
	}
	if err := checkTimes(c.IAT, c.NBF, s.now()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return &c, nil
}

// checkTimes holds a token's time claims (seconds; nbf 0 when absent) to
// the clock: not issued, nor valid from, more than ClockSkew in the future.
// Expiry is checked by golang-jwt, which names it (ExpiredToken).
func checkTimes(iat, nbf int64, now time.Time) error {
	limit := now.Add(ClockSkew).Unix()
	switch {
	case iat > limit:
		return fmt.Errorf("iat %d is in the future", iat)
	case nbf > limit:
		return fmt.Errorf("not valid before %d", nbf)
	}
	return nil
}

// parseRefresh parses a refresh token: parse plus the refresh scope and a jti.
func (s *Store) parseRefresh(token string) (*tokenClaims, error) {
	c, err := s.parse(token, typRefresh)
	if err != nil {
		return nil, err
	}
	if c.Scope != ScopeRefresh {
		return nil, fmt.Errorf("%w: scope %q is not a refresh scope", ErrInvalidToken, c.Scope)
	}
	if c.JTI == "" {
		return nil, fmt.Errorf("%w: missing jti", ErrInvalidToken)
	}
	return c, nil
}

// randomID returns base64url (unpadded) of n random bytes.
func randomID(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newRefreshID returns a fresh refresh token id: 32 random bytes.
func newRefreshID() (string, error) { return randomID(32) }

// credential is what a session was authenticated with.
type credential struct {
	scope  Scope  // ScopeAccess, ScopeAppPass or ScopeAppPassPrivileged
	apName string // app password name, "" for the account password
	apID   string // app password id
}

// issue signs a new access token and a refresh token with id jti for acct.
func (s *Store) issue(acct *account, cred credential, jti string, now time.Time) (*Session, error) {
	iat := now.Unix()
	access, err := s.sign(typAccess, &tokenClaims{
		Scope:     cred.scope,
		Aud:       s.serviceDID,
		Sub:       acct.DID.String(),
		IAT:       iat,
		EXP:       iat + int64(AccessTokenLifetime/time.Second),
		AppPassID: cred.apID,
	})
	if err != nil {
		return nil, err
	}
	refresh, err := s.sign(typRefresh, &tokenClaims{
		Scope: ScopeRefresh,
		Aud:   s.serviceDID,
		Sub:   acct.DID.String(),
		JTI:   jti,
		IAT:   iat,
		EXP:   iat + int64(RefreshTokenLifetime/time.Second),
	})
	if err != nil {
		return nil, err
	}
	return &Session{
		DID:            acct.DID,
		Handle:         acct.Handle,
		Email:          acct.Email,
		EmailConfirmed: acct.EmailConfirmed,
		AccessJWT:      access,
		RefreshJWT:     refresh,
		Scope:          cred.scope,
		AppPassword:    cred.apName,
	}, nil
}
