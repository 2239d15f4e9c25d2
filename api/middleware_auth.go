package api

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
)

type ctxKey int

const claimsKey ctxKey = 1

// claimsFrom returns the verified access claims of the request.
func claimsFrom(ctx context.Context) *auth.Claims {
	c, _ := ctx.Value(claimsKey).(*auth.Claims)
	return c
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

var errAuthMissing = xerr(http.StatusUnauthorized, "AuthMissing", "Authentication Required")

// access is the access-token policy of a route.
type access int

const (
	// accessAny: full-access sessions and app passwords.
	accessAny access = iota
	// accessFull: only sessions from the account password (the reference's
	// ACCESS_FULL methods: app passwords cannot manage the account).
	accessFull
)

// requireAuth verifies the access token and puts its claims in the context.
func (s *server) requireAuth(level access) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if !ok {
				if r.Header.Get("Authorization") != "" {
					writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Unexpected authorization type"))
					return
				}
				writeError(w, r, s.log, errAuthMissing)
				return
			}
			claims, err := s.auth.VerifyAccess(r.Context(), tok)
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			if level == accessFull && claims.Scope != auth.ScopeAccess {
				writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Bad token scope"))
				return
			}
			w.Header().Set("Cache-Control", "private")
			w.Header().Add("Vary", "Authorization")
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
		})
	}
}

// isAdmin reports whether the request carries HTTP Basic admin credentials.
func (s *server) isAdmin(r *http.Request) bool {
	if s.cfg.AdminPassword == "" {
		return false
	}
	h := r.Header.Get("Authorization")
	if len(h) < 6 || !strings.EqualFold(h[:6], "basic ") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:]))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	return ok && user == "admin" && subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.AdminPassword)) == 1
}

// requireAuthOrService accepts a session access token, or a service-auth JWT
// the account itself signed for this server and method (the video service
// uploads transcoded video to uploadBlob this way).
func (s *server) requireAuthOrService(lxm string) func(http.Handler) http.Handler {
	session := s.requireAuth(accessAny)
	return func(next http.Handler) http.Handler {
		withSession := session(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if typ, alg := jwtHeader(tok); !ok || typ != "JWT" || (alg != "ES256K" && alg != "ES256") {
				withSession.ServeHTTP(w, r)
				return
			}
			rp, err := s.accounts.Repo()
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			pub, err := s.accounts.PublicKey()
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			// Only the account's own key can vouch: no lookup needed.
			keys := func(_ context.Context, did syntax.DID, _ bool) (atcrypto.PublicKey, error) {
				if did != rp.DID() {
					return nil, fmt.Errorf("%s is not hosted here", did)
				}
				return pub, nil
			}
			iss, err := auth.VerifyServiceJWT(r.Context(), tok, s.cfg.ServiceDID, lxm, keys, time.Now())
			if err != nil {
				writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthRequired", "%v", err))
				return
			}
			claims := &auth.Claims{DID: iss, Scope: auth.ScopeAppPass}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
		})
	}
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
