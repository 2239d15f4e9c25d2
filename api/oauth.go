package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"

	"github.com/go-chi/chi/v5"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/oauth"
)

// OAuth: the authorization server's endpoints and pages are the oauth
// package's handler, mounted here; its verifier goes first in the list
// requireAuth asks, and the errors it returns carry the headers a DPoP
// client reads (WWW-Authenticate, DPoP-Nonce).

// mountOAuth routes the OAuth endpoints, pages and metadata to o.
func mountOAuth(r chi.Router, o *oauth.Server) {
	h := o.Handler()
	for _, p := range oauth.Paths {
		if p[len(p)-1] == '/' {
			r.Handle(p+"*", h)
		} else {
			r.Handle(p, h)
		}
	}
}

// oauthErrorHeaders sets the headers of an OAuth refusal on w, and reports
// the XRPC error for err if it is one of the OAuth kinds.
func oauthErrorHeaders(w http.ResponseWriter, err error) *XRPCError {
	var re *oauth.ResourceError
	if errors.As(err, &re) {
		w.Header().Set("WWW-Authenticate", re.WWWAuthenticate)
		if re.Nonce != "" {
			w.Header().Set("DPoP-Nonce", re.Nonce)
		}
		return &XRPCError{Status: re.Status, Name: re.Name, Message: re.Message, Err: err}
	}
	var sm *auth.ScopeMissingError
	if errors.As(err, &sm) {
		return &XRPCError{Status: http.StatusForbidden, Name: "ScopeMissingError", Message: sm.Error(), Err: err}
	}
	return nil
}

// scopeMissing is the refusal of an OAuth principal on a route its scope
// does not reach.
func scopeMissing(need auth.Permission) error {
	return &auth.ScopeMissingError{Scope: string(need)}
}

// canRepo checks the principal's scope for actions on records of coll.
func canRepo(ctx context.Context, coll string, actions ...string) error {
	p := principalFrom(ctx)
	for _, a := range actions {
		if err := p.CanRepo(coll, a); err != nil {
			return err
		}
	}
	return nil
}

// appViewAud is the service reference OAuth scopes name the AppView by.
func (s *server) appViewAud() string {
	return s.cfg.AppView.DID + "#bsky_appview"
}

// proxyAud is the service reference ("<did>#<service id>") a proxied call
// goes to, as OAuth rpc: permissions name it: the atproto-proxy header, or
// the default service of the method.
func (s *server) proxyAud(r *http.Request, nsid string) string {
	if h := r.Header.Get("Atproto-Proxy"); h != "" {
		return h
	}
	if nsid == "com.atproto.moderation.createReport" && s.cfg.ReportService.URL != "" {
		return s.cfg.ReportService.DID + "#atproto_labeler"
	}
	return s.appViewAud()
}

// scopedRPC checks, for a scoped principal only, that its scope lets it
// call lxm at aud: for the app.bsky methods this server answers itself,
// which an OAuth app reaches by rpc: permissions for the AppView.
func scopedRPC(ctx context.Context, lxm, aud string) error {
	if p := principalFrom(ctx); p != nil && p.Scopes != nil {
		return p.CanRPC(lxm, aud)
	}
	return nil
}

// ClientIP returns the function that names a request's client, believing
// X-Forwarded-For only from trusted (nil: DefaultTrustedProxies), for
// other packages that limit per client (the OAuth sign-in page).
func ClientIP(trusted []netip.Prefix) func(*http.Request) string {
	if trusted == nil {
		trusted = DefaultTrustedProxies
	}
	s := &server{cfg: Config{TrustedProxies: trusted}}
	return s.clientIP
}
