package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
)

// Service is an upstream service: its DID and base URL.
type Service struct {
	DID string
	URL string
	// operator marks a service the operator configured (the AppView, the
	// report service): trusted as configured, http or a private address
	// included, as the reference trusts its configuration. Services learned
	// from DID documents stay behind the SSRF guard.
	operator bool
}

// Limits of proxied calls, as the reference sets them.
const (
	maxProxyRequestBody  = 10 << 20
	maxProxyResponseBody = 10 << 20
	proxyTimeout         = 30 * time.Second
)

// protectedMethods are never proxied: they manage the account and exist only
// on the PDS (the reference's PROTECTED_METHODS).
var protectedMethods = map[string]bool{
	"com.atproto.admin.sendEmail":                       true,
	"com.atproto.identity.requestPlcOperationSignature": true,
	"com.atproto.identity.signPlcOperation":             true,
	"com.atproto.identity.updateHandle":                 true,
	"com.atproto.server.activateAccount":                true,
	"com.atproto.server.confirmEmail":                   true,
	"com.atproto.server.createAppPassword":              true,
	"com.atproto.server.deactivateAccount":              true,
	"com.atproto.server.getAccountInviteCodes":          true,
	"com.atproto.server.getSession":                     true,
	"com.atproto.server.listAppPasswords":               true,
	"com.atproto.server.requestAccountDelete":           true,
	"com.atproto.server.requestEmailConfirmation":       true,
	"com.atproto.server.requestEmailUpdate":             true,
	"com.atproto.server.revokeAppPassword":              true,
	"com.atproto.server.updateEmail":                    true,
}

// atprotoProxied are the com.atproto methods that go upstream: the ones the
// reference PDS does not serve and forwards (createReport to the report
// service, the rest to the AppView). Every other com.atproto method is the
// PDS's own and is never proxied.
var atprotoProxied = map[string]bool{
	"com.atproto.moderation.createReport":       true,
	"com.atproto.identity.refreshIdentity":      true,
	"com.atproto.identity.resolveDid":           true,
	"com.atproto.identity.resolveIdentity":      true,
	"com.atproto.label.queryLabels":             true,
	"com.atproto.lexicon.resolveLexicon":        true,
	"com.atproto.temp.addReservedHandle":        true,
	"com.atproto.temp.checkHandleAvailability":  true,
	"com.atproto.temp.dereferenceScope":         true,
	"com.atproto.temp.fetchLabels":              true,
	"com.atproto.temp.requestPhoneVerification": true,
	"com.atproto.temp.revokeAccountCredentials": true,
}

// privilegedMethods need a full session or a privileged app password (the
// reference's PRIVILEGED_METHODS: direct messages and account creation).
var privilegedMethods = map[string]bool{
	"chat.bsky.actor.deleteAccount":        true,
	"chat.bsky.actor.exportAccountData":    true,
	"chat.bsky.convo.deleteMessageForSelf": true,
	"chat.bsky.convo.getConvo":             true,
	"chat.bsky.convo.getConvoForMembers":   true,
	"chat.bsky.convo.getLog":               true,
	"chat.bsky.convo.getMessages":          true,
	"chat.bsky.convo.leaveConvo":           true,
	"chat.bsky.convo.listConvos":           true,
	"chat.bsky.convo.muteConvo":            true,
	"chat.bsky.convo.sendMessage":          true,
	"chat.bsky.convo.sendMessageBatch":     true,
	"chat.bsky.convo.unmuteConvo":          true,
	"chat.bsky.convo.updateRead":           true,
	"com.atproto.server.createAccount":     true,
}

var (
	forwardRequestHeaders  = []string{"Accept-Encoding", "Accept-Language", "Atproto-Accept-Labelers", "X-Bsky-Topics"}
	forwardBodyHeaders     = []string{"Content-Type", "Content-Encoding", "Content-Length"}
	forwardResponseHeaders = []string{"Content-Length", "Content-Encoding", "Content-Type", "Content-Language", "Atproto-Repo-Rev", "Atproto-Content-Labelers", "Retry-After"}
)

// parseProxyHeader splits "did#serviceId", with the reference's checks in
// the reference's order, so that each malformed header gets its message.
func parseProxyHeader(h string) (syntax.DID, string, error) {
	i := strings.IndexByte(h, '#')
	if i == 0 {
		return "", "", invalidRequest("no did specified in proxy header")
	}
	if i < 0 || i == len(h)-1 {
		return "", "", invalidRequest("no service id specified in proxy header")
	}
	if strings.IndexByte(h[i+1:], '#') >= 0 {
		return "", "", invalidRequest("invalid proxy header format")
	}
	if strings.Contains(h, " ") {
		return "", "", invalidRequest("proxy header cannot contain spaces")
	}
	did, err := syntax.ParseDID(h[:i])
	if err != nil {
		return "", "", invalidRequest("Poorly formatted DID: %s", h[:i])
	}
	return did, h[i+1:], nil
}

// proxyTarget picks the upstream of a call: the atproto-proxy header's
// service (the configured AppView without a lookup), else the default for
// the method.
func (s *server) proxyTarget(ctx context.Context, r *http.Request, nsid string) (Service, error) {
	if h := r.Header.Get("Atproto-Proxy"); h != "" {
		did, svc, err := parseProxyHeader(h)
		if err != nil {
			return Service{}, err
		}
		if s.cfg.AppView.DID != "" && did.String() == s.cfg.AppView.DID && svc == "bsky_appview" {
			return s.cfg.AppView, nil
		}
		if s.resolver == nil {
			return Service{}, invalidRequest("could not resolve proxy did")
		}
		u, err := s.resolver.ServiceEndpoint(ctx, did, svc)
		if errors.Is(err, identity.ErrServiceNotFound) {
			return Service{}, invalidRequest("could not resolve proxy did service url")
		}
		if err != nil {
			return Service{}, invalidRequest("could not resolve proxy did")
		}
		return Service{DID: did.String(), URL: u}, nil
	}
	if nsid == "com.atproto.moderation.createReport" && s.cfg.ReportService.URL != "" {
		return s.cfg.ReportService, nil
	}
	if s.cfg.AppView.URL == "" {
		return Service{}, invalidRequest("No service configured for %s", nsid)
	}
	return s.cfg.AppView, nil
}

// catchAll takes every /xrpc/ call no route serves: unknown and protected
// methods are not implemented; the rest is proxied, which needs a session.
func (s *server) catchAll(w http.ResponseWriter, r *http.Request) {
	nsid := strings.TrimPrefix(r.URL.Path, "/xrpc/")
	if r.Method == http.MethodHead && s.local[nsid] == http.MethodGet {
		// HEAD of a local GET route is that route without a body, as
		// Express serves it for the reference (CDNs probe getBlob so). The
		// server drops the body of a HEAD response.
		get := r.Clone(context.WithValue(r.Context(), chi.RouteCtxKey, nil))
		get.Method = http.MethodGet
		s.mux.ServeHTTP(w, get)
		return
	}
	if _, err := syntax.ParseNSID(nsid); err != nil {
		// Not a method name at all (/xrpc/../x, /xrpc/a/b): the client's
		// mistake, as the reference answers it, not a missing method.
		writeError(w, r, s.log, invalidRequest("invalid xrpc path"))
		return
	}
	if want, ok := s.local[nsid]; ok {
		writeError(w, r, s.log, invalidRequest("Incorrect HTTP method (%s) expected %s", r.Method, want))
		return
	}
	if protectedMethods[nsid] || (strings.HasPrefix(nsid, "com.atproto.") && !atprotoProxied[nsid]) {
		// A com.atproto method is this server's to serve: one it does not
		// serve is not implemented, never the AppView's to answer.
		s.notImplemented(w, r)
		return
	}
	// Nowhere to send it: no header, and no default service for it.
	if r.Header.Get("Atproto-Proxy") == "" && s.cfg.AppView.URL == "" &&
		!(nsid == "com.atproto.moderation.createReport" && s.cfg.ReportService.URL != "") {
		s.notImplemented(w, r)
		return
	}
	s.requireAuth(auth.PermRPC)(http.HandlerFunc(s.proxy)).ServeHTTP(w, r)
}

// proxy forwards an XRPC call this server does not serve to the service
// that does, authenticated as the account with a service-auth JWT.
func (s *server) proxy(w http.ResponseWriter, r *http.Request) {
	nsid := strings.TrimPrefix(r.URL.Path, "/xrpc/")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		s.methodNotAllowed(w, r)
		return
	}
	if privilegedMethods[nsid] && !principalFrom(r.Context()).Can(auth.PermRPCPrivileged) {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Bad token method"))
		return
	}
	if err := principalFrom(r.Context()).CanRPC(nsid, s.proxyAud(r, nsid)); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	target, err := s.proxyTarget(r.Context(), r, nsid)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if _, ok := readAfterWrite[nsid]; ok {
		// Ask for a body we can read and merge local records into.
		r.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := s.forward(r, target, nsid, target.DID, nsid, nil)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	defer resp.Body.Close()
	if ra, ok := readAfterWrite[nsid]; ok && resp.StatusCode == http.StatusOK {
		if s.munge(w, r, resp, ra) {
			return
		}
	}
	relay(w, resp)
}

// forward sends r (or body, if set) to method at target with a service JWT
// for aud and lxm, and returns the upstream response, whose body the caller
// closes. Upstream 5xx and transport failures come back as 502
// UpstreamFailure.
func (s *server) forward(r *http.Request, target Service, method, aud, lxm string, body []byte) (*http.Response, error) {
	if err := identity.CheckTarget(r.Context(), target.URL, s.cfg.AllowPrivateUpstreams || target.operator); err != nil {
		return nil, invalidRequest("proxy target refused: %v", err)
	}
	key, err := s.accounts.SigningKey()
	if err != nil {
		return nil, err
	}
	tok, err := auth.SignServiceJWT(key, principalFrom(r.Context()).DID, aud, lxm, 60*time.Second, time.Now())
	if err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(target.URL, "/") + "/xrpc/" + method
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	var rd io.Reader
	switch {
	case body != nil:
		rd = strings.NewReader(string(body))
	case r.Method == http.MethodPost:
		rd = http.MaxBytesReader(nil, r.Body, maxProxyRequestBody)
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyTimeout)
	req, err := http.NewRequestWithContext(ctx, r.Method, u, rd)
	if err != nil {
		cancel()
		return nil, invalidRequest("bad proxy request: %v", err)
	}
	for _, h := range forwardRequestHeaders {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if r.Method == http.MethodPost {
		for _, h := range forwardBodyHeaders {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		if body != nil {
			req.ContentLength = int64(len(body))
			req.Header.Set("Content-Length", fmt.Sprint(len(body)))
		} else {
			req.ContentLength = r.ContentLength
		}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.clientFor(target).Do(req)
	if err != nil {
		cancel()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large")
		}
		s.log.Warn("upstream unreachable", "url", target.URL, "method", method, "err", err)
		return nil, xerr(http.StatusBadGateway, "UpstreamFailure", "Upstream service unreachable")
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	if resp.StatusCode >= 500 {
		defer resp.Body.Close()
		return nil, xerr(http.StatusBadGateway, "UpstreamFailure", "Upstream Failure")
	}
	return resp, nil
}

// clientFor is the HTTP client for calls to target: the operator's own
// services are reached as configured; any other goes through the SSRF
// guard (https, public addresses at dial time).
func (s *server) clientFor(target Service) *http.Client {
	if target.operator {
		return s.operatorUpstream
	}
	return s.upstream
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// relay copies an upstream response: status, the forwarded headers and at
// most maxProxyResponseBody bytes of body.
func relay(w http.ResponseWriter, resp *http.Response) {
	for _, h := range forwardResponseHeaders {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	if resp.ContentLength > maxProxyResponseBody {
		w.Header().Del("Content-Length")
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "UpstreamFailure", "message": "upstream response too large"})
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, maxProxyResponseBody))
}

// forwardPublic relays an unauthenticated GET to target unchanged: reads of
// public data this server does not hold.
func (s *server) forwardPublic(w http.ResponseWriter, r *http.Request, target Service) {
	if err := identity.CheckTarget(r.Context(), target.URL, s.cfg.AllowPrivateUpstreams || target.operator); err != nil {
		writeError(w, r, s.log, invalidRequest("proxy target refused: %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyTimeout)
	defer cancel()
	u := strings.TrimSuffix(target.URL, "/") + r.URL.Path
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		writeError(w, r, s.log, invalidRequest("bad proxy request: %v", err))
		return
	}
	for _, h := range forwardRequestHeaders {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := s.clientFor(target).Do(req)
	if err != nil {
		writeError(w, r, s.log, xerr(http.StatusBadGateway, "UpstreamFailure", "Upstream service unreachable"))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		writeError(w, r, s.log, xerr(http.StatusBadGateway, "UpstreamFailure", "Upstream Failure"))
		return
	}
	relay(w, resp)
}
