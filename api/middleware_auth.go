package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/oauth"
)

type ctxKey int

const principalKey ctxKey = 1

// principalFrom returns the verified principal of the request (nil on
// routes without requireAuth).
func principalFrom(ctx context.Context) *auth.Principal {
	p, _ := ctx.Value(principalKey).(*auth.Principal)
	return p
}

var errAuthMissing = xerr(http.StatusUnauthorized, "AuthMissing", "Authentication Required")

// verifiers is the ordered list requireAuth asks: the first that does not
// answer auth.ErrOtherCredential decides. Service JWTs come before session
// JWTs because both are bearer tokens and only the service verifier can
// tell its own by the header.
func (s *server) defaultVerifiers() []auth.Verifier {
	keys := func(_ context.Context, did syntax.DID, _ bool) (atcrypto.PublicKey, error) {
		rp, err := s.accounts.Repo()
		if err != nil {
			return nil, err
		}
		// Only the account's own key can vouch: no lookup needed.
		if did != rp.DID() {
			return nil, fmt.Errorf("%s is not hosted here", did)
		}
		return s.accounts.PublicKey()
	}
	return []auth.Verifier{
		auth.ServiceVerifier{Audience: s.cfg.ServiceDID, Keys: keys},
		auth.SessionVerifier{Store: s.auth},
		auth.AdminVerifier{Password: s.cfg.AdminPassword},
	}
}

// requireAuth asks the verifiers for the request's principal, refuses it
// unless it holds need, and puts it in the context.
func (s *server) requireAuth(need auth.Permission) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s.oauth != nil && oauth.IsDPoP(r) {
				// Every answer to a DPoP request carries the current nonce.
				w.Header().Set("DPoP-Nonce", s.oauth.Nonce())
			}
			p, err := s.authenticate(r, need)
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			if p.DID != "" {
				// A taken-down or deleted account is refused everywhere
				// (the reference's checkTakedown); the rule is account's.
				if err := s.accounts.CheckStatus(r.Context(), account.ActionAuthenticate); err != nil {
					writeError(w, r, s.log, err)
					return
				}
			}
			if !p.Can(need) && p.Kind == auth.KindOAuth {
				writeError(w, r, s.log, scopeMissing(need))
				return
			}
			if !p.Can(need) {
				writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Bad token scope"))
				return
			}
			if p.Kind != auth.KindService {
				w.Header().Set("Cache-Control", "private")
				w.Header().Add("Vary", "Authorization")
			}
			if err := s.paramsAfterAuth(r); err != nil {
				writeError(w, r, s.log, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
		})
	}
}

// authenticate returns the principal of the first verifier that knows the
// request's credential.
func (s *server) authenticate(r *http.Request, need auth.Permission) (*auth.Principal, error) {
	req := auth.Request{
		Authorization: r.Header.Get("Authorization"),
		DPoP:          r.Header.Get("DPoP"),
		Method:        r.Method,
		URL:           s.cfg.PublicURL + r.URL.RequestURI(),
		NSID:          strings.TrimPrefix(r.URL.Path, "/xrpc/"),
		Need:          need,
	}
	for _, v := range s.verifiers {
		p, err := v.Verify(r.Context(), req)
		if errors.Is(err, auth.ErrOtherCredential) {
			continue
		}
		return p, err
	}
	if req.Authorization == "" {
		return nil, errAuthMissing
	}
	return nil, xerr(http.StatusBadRequest, "InvalidToken", "Unexpected authorization type")
}

// isAdmin reports whether the request carries HTTP Basic admin credentials.
func (s *server) isAdmin(r *http.Request) bool {
	return auth.AdminVerifier{Password: s.cfg.AdminPassword}.Check(r.Header.Get("Authorization"))
}

// bearer extracts the token of an "Authorization: Bearer" header (the
// refresh-token routes read it themselves).
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}
