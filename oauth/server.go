package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
	bolt "go.etcd.io/bbolt"
)

// Lifetimes, as the reference provider sets them (oauth-provider
// constants.ts), except the code's, which the reference ties to the
// request's inactivity timeout.
const (
	AccessTokenLifetime = 60 * time.Minute
	// PARLifetime bounds the whole authorization (sign-in and consent).
	PARLifetime  = 5 * time.Minute
	CodeLifetime = 2 * time.Minute
	// Public clients: the session lasts a week, a refresh token two days.
	PublicSessionLifetime = 7 * 24 * time.Hour
	PublicRefreshLifetime = 2 * 24 * time.Hour
	// Confidential clients: a year, a month.
	ConfidentialSessionLifetime = 365 * 24 * time.Hour
	ConfidentialRefreshLifetime = 30 * 24 * time.Hour
	// DeviceLifetime is how long a browser stays signed in to the sign-in
	// pages (the reference's AUTHENTICATION_MAX_AGE).
	DeviceLifetime = 7 * 24 * time.Hour
)

// maxFormBody bounds the body of every form endpoint.
const maxFormBody = 32 << 10

// Config configures a Server.
type Config struct {
	// Issuer is this server's public URL (scheme and host, no path): the
	// OAuth issuer, and the base of every htu. Required.
	Issuer string
	// ServiceDID is the aud of access tokens (did:web:<hostname>). Required.
	ServiceDID string
	// Secret is key material (PDS_JWT_SECRET) the access-token, nonce and
	// CSRF keys are derived from. Required.
	Secret []byte
	// AllowPrivateClients lets client metadata come over http from private
	// addresses and web clients redirect to loopback: tests and development
	// only.
	AllowPrivateClients bool
	// Lexicons resolves include: permission sets (nil: none resolve).
	Lexicons lexicon.Catalog
	// HTTPClient fetches client documents; nil means identity's SSRF-safe
	// client.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Account is the one account as the sign-in pages need it.
type Account interface {
	// OAuthAccount returns the DID and handle of the account.
	OAuthAccount(ctx context.Context) (syntax.DID, syntax.Handle, error)
	// CheckPassword returns nil if identifier names the account and
	// password is its account password (app passwords do not sign in to
	// OAuth), auth.ErrInvalidLogin otherwise.
	CheckPassword(ctx context.Context, identifier, password string) error
}

// SecondFactor is the email second factor of sign-ins, where the account
// has it.
type SecondFactor interface {
	// Required reports whether a sign-in needs a code sent by email.
	Required(ctx context.Context) (bool, error)
	// Send emails a fresh code.
	Send(ctx context.Context) error
	// Check consumes code: nil if it is valid.
	Check(ctx context.Context, code string) error
}

// Deps are the services a Server uses.
type Deps struct {
	// DB holds the package's buckets (prefix "oauth_"); the caller owns it.
	DB      *bolt.DB
	Account Account
	// SecondFactor is nil when sign-ins need only the password.
	SecondFactor SecondFactor
	// LoginLimit bounds sign-in attempts per client address (nil: 30 per
	// 5 minutes, as createSession).
	LoginLimit *auth.RateLimiter
	// ClientIP names the client of a request (nil: its peer address).
	ClientIP func(*http.Request) string
}

// Server is the atproto OAuth authorization server of the PDS, and the
// verifier of the tokens it issues. It is safe for concurrent use.
type Server struct {
	cfg       Config
	db        *bolt.DB
	account   Account
	factor    SecondFactor
	limit     *auth.RateLimiter
	clientIP  func(*http.Request) string
	log       *slog.Logger
	http      *http.Client
	now       func() time.Time
	tokenKey  []byte
	csrfKey   []byte
	nonces    *nonces
	replay    replayCache
	clients   clientCache
	issuerURL *url.URL
	mux       *http.ServeMux
}

// derive returns a key for one use of the configured secret.
func derive(secret []byte, use string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("pds oauth " + use))
	return m.Sum(nil)
}

// New returns a Server over d.DB, creating its buckets.
func New(cfg Config, d Deps) (*Server, error) {
	iu, err := url.Parse(cfg.Issuer)
	if err != nil || (iu.Scheme != "https" && iu.Scheme != "http") || iu.Host == "" || (iu.Path != "" && iu.Path != "/") || iu.RawQuery != "" {
		return nil, fmt.Errorf("oauth: issuer %q must be a URL with only a scheme and host", cfg.Issuer)
	}
	cfg.Issuer = strings.TrimSuffix(cfg.Issuer, "/")
	if _, err := syntax.ParseDID(cfg.ServiceDID); err != nil {
		return nil, fmt.Errorf("oauth: service DID: %w", err)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("oauth: empty secret")
	}
	if d.DB == nil || d.Account == nil {
		return nil, fmt.Errorf("oauth: DB and Account are required")
	}
	s := &Server{cfg: cfg, db: d.DB, account: d.Account, factor: d.SecondFactor, limit: d.LoginLimit,
		clientIP: d.ClientIP, log: cfg.Log, http: cfg.HTTPClient, now: cfg.Now, issuerURL: iu,
		tokenKey: derive(cfg.Secret, "access token"), csrfKey: derive(cfg.Secret, "csrf")}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.http == nil {
		s.http = identity.NewSafeClient(clientFetchTimeout, cfg.AllowPrivateClients)
	}
	if s.limit == nil {
		s.limit = auth.NewRateLimiter(30, 5*time.Minute, nil)
	}
	if s.clientIP == nil {
		s.clientIP = func(r *http.Request) string { return r.RemoteAddr }
	}
	s.nonces = &nonces{key: derive(cfg.Secret, "dpop nonce"), now: s.now}
	err = d.DB.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("creating bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// Handler serves the OAuth endpoints, the sign-in pages and the metadata
// documents; mount it for the paths Paths lists.
func (s *Server) Handler() http.Handler { return s.mux }

// Paths are the path prefixes Handler serves.
var Paths = []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server", "/oauth/"}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /.well-known/oauth-protected-resource", s.protectedResource)
	m.HandleFunc("GET /.well-known/oauth-authorization-server", s.authServerMetadata)
	m.HandleFunc("POST /oauth/par", s.par)
	m.HandleFunc("POST /oauth/token", s.token)
	m.HandleFunc("POST /oauth/revoke", s.revoke)
	m.HandleFunc("GET /oauth/authorize", s.authorizePage)
	m.HandleFunc("POST /oauth/authorize/sign-in", s.signIn)
	m.HandleFunc("POST /oauth/authorize/consent", s.consent)
	m.HandleFunc("GET /oauth/account", s.accountPage)
	m.HandleFunc("POST /oauth/account/sign-in", s.accountSignIn)
	m.HandleFunc("POST /oauth/account/revoke", s.accountRevoke)
	m.HandleFunc("POST /oauth/account/sign-out", s.accountSignOut)
	m.HandleFunc("GET /oauth/style.css", s.styleCSS)
	m.HandleFunc("/oauth/", func(w http.ResponseWriter, r *http.Request) {
		writeOAuthError(w, http.StatusNotFound, "not_found", "no such OAuth endpoint")
	})
	s.mux = m
}

// Run sweeps expired state every interval until ctx ends.
func (s *Server) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.Sweep(ctx); err != nil {
			s.log.WarnContext(ctx, "oauth sweep failed", "err", err)
		} else if n > 0 {
			s.log.DebugContext(ctx, "oauth sweep", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes expired requests, codes, sessions and devices, returning
// how many went.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = sweep(tx, s.now())
		return err
	})
	return n, err
}

func (s *Server) protectedResource(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"resource":                 s.cfg.Issuer,
		"authorization_servers":    []string{s.cfg.Issuer},
		"bearer_methods_supported": []string{"header"},
		"scopes_supported":         []string{},
		"resource_documentation":   "https://atproto.com",
	})
}

func (s *Server) authServerMetadata(w http.ResponseWriter, r *http.Request) {
	iss := s.cfg.Issuer
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                                iss,
		"authorization_endpoint":                                iss + "/oauth/authorize",
		"token_endpoint":                                        iss + "/oauth/token",
		"pushed_authorization_request_endpoint":                 iss + "/oauth/par",
		"revocation_endpoint":                                   iss + "/oauth/revoke",
		"require_pushed_authorization_requests":                 true,
		"scopes_supported":                                      []string{ScopeAtproto, ScopeTransitionEmail, ScopeTransitionGeneric, ScopeTransitionChat},
		"subject_types_supported":                               []string{"public"},
		"response_types_supported":                              []string{"code"},
		"response_modes_supported":                              []string{"query", "fragment"},
		"grant_types_supported":                                 []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":                      []string{"S256"},
		"ui_locales_supported":                                  []string{"en-US"},
		"display_values_supported":                              []string{"page"},
		"request_parameter_supported":                           false,
		"request_uri_parameter_supported":                       true,
		"require_request_uri_registration":                      true,
		"authorization_response_iss_parameter_supported":        true,
		"client_id_metadata_document_supported":                 true,
		"token_endpoint_auth_methods_supported":                 []string{"none", "private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported":      []string{"ES256"},
		"revocation_endpoint_auth_methods_supported":            []string{"none", "private_key_jwt"},
		"revocation_endpoint_auth_signing_alg_values_supported": []string{"ES256"},
		"dpop_signing_alg_values_supported":                     []string{"ES256"},
		"protected_resources":                                   []string{iss},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeOAuthError answers with the OAuth error envelope (RFC 6749 5.2).
func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// oauthError is an error answered with a given OAuth error code.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func oerr(status int, code, format string, args ...any) *oauthError {
	return &oauthError{status: status, code: code, desc: fmt.Sprintf(format, args...)}
}

// writeErr answers err: an *oauthError as itself, a DPoP error as
// use_dpop_nonce or invalid_dpop_proof, a client metadata error as
// invalid_client_metadata, anything else as a logged server_error.
func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	var de *dpopError
	switch {
	case errors.As(err, &oe):
		writeOAuthError(w, oe.status, oe.code, oe.desc)
	case errors.Is(err, errUseNonce):
		writeOAuthError(w, http.StatusBadRequest, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
	case errors.As(err, &de):
		writeOAuthError(w, http.StatusBadRequest, "invalid_dpop_proof", de.desc)
	case errors.Is(err, errInvalidClientMetadata):
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", strings.TrimPrefix(err.Error(), "invalid_client_metadata: "))
	case errors.Is(err, errInvalidScope):
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", strings.TrimPrefix(err.Error(), "invalid_scope: "))
	default:
		s.log.ErrorContext(r.Context(), "oauth request failed", "path", r.URL.Path, "err", err)
		writeOAuthError(w, http.StatusInternalServerError, "server_error", "internal error")
	}
}

// readForm parses a bounded urlencoded body.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	ct := r.Header.Get("Content-Type")
	if !strings.HasPrefix(strings.ToLower(ct), "application/x-www-form-urlencoded") {
		return nil, oerr(http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return nil, oerr(http.StatusBadRequest, "invalid_request", "unreadable form body")
	}
	// Parameters may not repeat (RFC 6749 3.1), and query parameters do
	// not count at these endpoints.
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, oerr(http.StatusBadRequest, "invalid_request", "parameter %s repeated", k)
		}
	}
	return r.PostForm, nil
}

// endpointURL is the htu of one of our endpoints: the issuer plus path.
func (s *Server) endpointURL(path string) string { return s.cfg.Issuer + path }

// dpopAtEndpoint verifies the DPoP proof of a request to an authorization
// server endpoint, always handing out the current nonce.
func (s *Server) dpopAtEndpoint(w http.ResponseWriter, r *http.Request) (*proof, error) {
	w.Header().Set("DPoP-Nonce", s.nonces.current())
	return s.verifyProof(r.Header.Values("DPoP"), r.Method, s.endpointURL(r.URL.Path), "")
}
