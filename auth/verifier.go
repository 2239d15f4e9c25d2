package auth

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// The verifier seam: the api asks an ordered list of Verifiers for the
// Principal behind a request's credentials, then checks that the principal
// holds the Permission its route declares. A new kind of credential (OAuth
// DPoP-bound tokens) is one more Verifier; no handler changes.

// Permission is what a route needs from its caller, declared as data next
// to the route. The names follow atproto's OAuth permission vocabulary
// where one fits.
type Permission string

// The permissions routes declare today.
const (
	// PermAccountRead: read the account's own session and details
	// (getSession, getRecommendedDidCredentials).
	PermAccountRead Permission = "account:read"
	// PermAccountEmail: see the account's email and private preferences.
	PermAccountEmail Permission = "account:email"
	// PermAccountManage: manage credentials (app passwords) and the account
	// itself; the reference's ACCESS_FULL methods.
	PermAccountManage Permission = "account:manage"
	// PermIdentityHandle: change the handle.
	PermIdentityHandle Permission = "identity:handle"
	// PermIdentityPLC: request and sign PLC operations (migration).
	PermIdentityPLC Permission = "identity:plc"
	// PermRepoWrite: create, update and delete records.
	PermRepoWrite Permission = "repo:write"
	// PermBlobWrite: upload blobs.
	PermBlobWrite Permission = "blob:write"
	// PermPreferences: read and write app preferences.
	PermPreferences Permission = "preferences"
	// PermRPC: calls proxied to other services, and service-auth tokens
	// for them.
	PermRPC Permission = "rpc"
	// PermRPCPrivileged: proxied calls and service-auth tokens for the
	// privileged methods (chat, for instance).
	PermRPCPrivileged Permission = "rpc:privileged"
	// PermAdmin: the operator's administration methods.
	PermAdmin Permission = "admin"
)

// Kind names the kind of credential a Principal was verified from.
type Kind string

// The kinds of credentials this package verifies.
const (
	KindSession               Kind = "session"                 // access JWT from the account password
	KindAppPassword           Kind = "app-password"            // access JWT from an app password
	KindAppPasswordPrivileged Kind = "app-password-privileged" // from a privileged app password
	KindService               Kind = "service"                 // service-auth JWT signed by the account
	KindAdmin                 Kind = "admin"                   // HTTP Basic with the admin password
)

// Permissions granted by each kind of credential.
var (
	appPasswordPerms = []Permission{PermAccountRead, PermRepoWrite, PermBlobWrite, PermPreferences, PermRPC}
	privilegedPerms  = append(slices.Clone(appPasswordPerms), PermRPCPrivileged)
	sessionPerms     = append(slices.Clone(privilegedPerms), PermAccountEmail, PermAccountManage, PermIdentityHandle, PermIdentityPLC)
	servicePerms     = []Permission{PermBlobWrite}
	adminPerms       = []Permission{PermAdmin}
)

// Principal is who a request acts as, and what it may do.
type Principal struct {
	DID  syntax.DID // the account; empty for KindAdmin
	Kind Kind
	// Claims are the session token's claims (KindSession and app
	// passwords); nil for other kinds.
	Claims *Claims
	// Perms are the permissions the credential grants.
	Perms []Permission
	// Scopes narrow Perms to what an OAuth grant names (which collections,
	// MIME types, methods); nil for credentials without scopes.
	Scopes Scopes
}

// Can reports whether the principal holds perm.
func (p *Principal) Can(perm Permission) bool {
	return p != nil && slices.Contains(p.Perms, perm)
}

// Request is what a Verifier sees of an HTTP request: the credential
// headers and the route. It keeps this package free of net/http.
type Request struct {
	// Authorization and DPoP are the headers of those names.
	Authorization, DPoP string
	// Method and URL are the HTTP method and the full request URL (the
	// htm and htu of DPoP proofs).
	Method, URL string
	// NSID is the XRPC method called (the lxm of service-auth tokens).
	NSID string
	// Need is the permission the route declares.
	Need Permission
}

// ErrOtherCredential is returned by a Verifier when the request carries no
// credential of its kind, or one of its kind that can never grant
// Request.Need: the next verifier is asked. When every verifier answers it,
// the request is unauthenticated.
var ErrOtherCredential = errors.New("unexpected authorization type")

// A Verifier turns a request's credential of one kind into a Principal.
//
// Verify returns ErrOtherCredential (the next verifier is asked), a
// principal, or an error that ends the request: an invalid or expired
// credential of its kind (wrap ErrInvalidToken, ErrExpiredToken or
// ErrServiceAuth so the api answers the right XRPC error). It must not
// check Request.Need against the principal's permissions beyond deciding
// ErrOtherCredential: the caller does that. Verifiers are used
// concurrently.
type Verifier interface {
	Verify(ctx context.Context, req Request) (*Principal, error)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(h string) (string, bool) {
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

// SessionVerifier verifies session access JWTs (from the account password
// or an app password) issued by Store.
type SessionVerifier struct{ Store *Store }

// Verify implements Verifier.
func (v SessionVerifier) Verify(ctx context.Context, req Request) (*Principal, error) {
	tok, ok := bearerToken(req.Authorization)
	if !ok {
		return nil, ErrOtherCredential
	}
	c, err := v.Store.VerifyAccess(ctx, tok)
	if err != nil {
		return nil, err
	}
	p := &Principal{DID: c.DID, Claims: c}
	switch c.Scope {
	case ScopeAccess:
		p.Kind, p.Perms = KindSession, sessionPerms
	case ScopeAppPassPrivileged:
		p.Kind, p.Perms = KindAppPasswordPrivileged, privilegedPerms
	default:
		p.Kind, p.Perms = KindAppPassword, appPasswordPerms
	}
	return p, nil
}

// ServiceVerifier verifies service-auth JWTs the account itself signed for
// this server and the called method (the video service uploads transcoded
// video to uploadBlob this way). It claims only bearer tokens whose header
// says an ES256K or ES256 JWT, and only for routes whose need a service
// token can grant, so a session token is never mistaken for one.
type ServiceVerifier struct {
	// Audience is this server's DID.
	Audience string
	// Keys returns the signing key of an issuer; only the account hosted
	// here should resolve.
	Keys KeyResolver
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify implements Verifier.
func (v ServiceVerifier) Verify(ctx context.Context, req Request) (*Principal, error) {
	tok, ok := bearerToken(req.Authorization)
	if !ok || !slices.Contains(servicePerms, req.Need) {
		return nil, ErrOtherCredential
	}
	if typ, alg := jwtHeader(tok); typ != "JWT" || (alg != "ES256K" && alg != "ES256") {
		return nil, ErrOtherCredential
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	iss, err := VerifyServiceJWT(ctx, tok, v.Audience, req.NSID, v.Keys, now())
	if err != nil {
		return nil, err
	}
	return &Principal{DID: iss, Kind: KindService, Perms: servicePerms}, nil
}

// jwtHeader reads the typ and alg of a JWT's header, verifying nothing.
func jwtHeader(tok string) (typ, alg string) {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", ""
	}
	var hdr struct {
		Typ string `json:"typ"`
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(raw, &hdr)
	return hdr.Typ, hdr.Alg
}

// AdminVerifier verifies HTTP Basic credentials of the user "admin" with
// the operator's admin password. It claims them only on routes that need
// PermAdmin; elsewhere Basic credentials are an unexpected type, as in the
// reference PDS.
type AdminVerifier struct {
	// Password is the admin password; empty disables admin access.
	Password string
}

// Verify implements Verifier.
func (v AdminVerifier) Verify(_ context.Context, req Request) (*Principal, error) {
	h := req.Authorization
	if req.Need != PermAdmin || len(h) < 6 || !strings.EqualFold(h[:6], "basic ") {
		return nil, ErrOtherCredential
	}
	if !v.Check(h) {
		return nil, fmt.Errorf("%w: bad admin credentials", ErrInvalidLogin)
	}
	return &Principal{Kind: KindAdmin, Perms: adminPerms}, nil
}

// Check reports whether an Authorization header value carries the admin
// credentials, comparing the password in constant time.
func (v AdminVerifier) Check(authorization string) bool {
	h := authorization
	if v.Password == "" || len(h) < 6 || !strings.EqualFold(h[:6], "basic ") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	return ok && user == "admin" && subtle.ConstantTimeCompare([]byte(pass), []byte(v.Password)) == 1
}
