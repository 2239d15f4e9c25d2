package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Client discovery: a client_id is the https URL of the client's metadata
// document, fetched through the SSRF guard with size and time bounds and
// cached; or the loopback development client "http://localhost?...".

const (
	// maxClientMetadataSize bounds a client metadata (or JWKS) document.
	maxClientMetadataSize = 64 << 10
	// clientFetchTimeout bounds one fetch of a client document.
	clientFetchTimeout = 10 * time.Second
	// clientCacheTTL is how long fetched metadata is reused.
	clientCacheTTL = 10 * time.Minute
	// maxCachedClients bounds the cache (entries beyond are evicted).
	maxCachedClients = 256
	// clientAssertionMaxAge bounds a private_key_jwt assertion's age, as
	// the reference (1 minute).
	clientAssertionMaxAge = time.Minute

	jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// errInvalidClientMetadata is the "invalid_client_metadata" error.
var errInvalidClientMetadata = errors.New("invalid_client_metadata")

// clientMetadata is the client metadata document (the fields we use).
type clientMetadata struct {
	ClientID                    string   `json:"client_id"`
	ApplicationType             string   `json:"application_type,omitempty"`
	GrantTypes                  []string `json:"grant_types"`
	ResponseTypes               []string `json:"response_types"`
	Scope                       string   `json:"scope"`
	RedirectURIs                []string `json:"redirect_uris"`
	TokenEndpointAuthMethod     string   `json:"token_endpoint_auth_method"`
	TokenEndpointAuthSigningAlg string   `json:"token_endpoint_auth_signing_alg,omitempty"`
	DPoPBoundAccessTokens       bool     `json:"dpop_bound_access_tokens"`
	JWKS                        *jwkSet  `json:"jwks,omitempty"`
	JWKSURI                     string   `json:"jwks_uri,omitempty"`
	ClientName                  string   `json:"client_name,omitempty"`
	ClientURI                   string   `json:"client_uri,omitempty"`
	LogoURI                     string   `json:"logo_uri,omitempty"`
	TosURI                      string   `json:"tos_uri,omitempty"`
	PolicyURI                   string   `json:"policy_uri,omitempty"`
}

type jwkSet struct {
	Keys []clientJWK `json:"keys"`
}

type clientJWK struct {
	jwk
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// client is a resolved, validated client.
type client struct {
	ID           string
	Meta         clientMetadata
	Loopback     bool
	Confidential bool
	Keys         []clientJWK // private_key_jwt keys
	fetched      time.Time
}

// Name is what the pages call the client: its host, with the name it gives
// itself (which anyone can claim) after it.
func (c *client) Host() string {
	if c.Loopback {
		return "an app on this computer (development client)"
	}
	u, err := url.Parse(c.ID)
	if err != nil {
		return c.ID
	}
	return u.Host
}

type clientCache struct {
	mu      sync.Mutex
	entries map[string]*client
}

func (c *clientCache) get(id string, now time.Time) *client {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil || now.Sub(e.fetched) > clientCacheTTL {
		return nil
	}
	return e
}

func (c *clientCache) put(cl *client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]*client{}
	}
	if len(c.entries) >= maxCachedClients {
		var oldest string
		for id, e := range c.entries {
			if oldest == "" || e.fetched.Before(c.entries[oldest].fetched) {
				oldest = id
			}
		}
		delete(c.entries, oldest)
	}
	c.entries[cl.ID] = cl
}

// resolveClient returns the validated client of clientID, from the cache or
// fetched. Errors wrap errInvalidClientMetadata or are "invalid_client".
func (s *Server) resolveClient(ctx context.Context, clientID string) (*client, error) {
	if len(clientID) > 2048 || clientID == "" {
		return nil, fmt.Errorf("%w: client_id missing or too long", errInvalidClientMetadata)
	}
	if strings.HasPrefix(clientID, "http://localhost") {
		return loopbackClient(clientID)
	}
	if c := s.clients.get(clientID, s.now()); c != nil {
		return c, nil
	}
	u, err := url.Parse(clientID)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("%w: client_id is not a URL", errInvalidClientMetadata)
	}
	if u.Scheme != "https" && !(s.cfg.AllowPrivateClients && u.Scheme == "http") {
		return nil, fmt.Errorf("%w: client_id must be an https URL", errInvalidClientMetadata)
	}
	if u.User != nil || u.Fragment != "" || u.RawFragment != "" {
		return nil, fmt.Errorf("%w: client_id must not hold credentials or a fragment", errInvalidClientMetadata)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !s.cfg.AllowPrivateClients {
		return nil, fmt.Errorf("%w: client_id host %s is an IP address", errInvalidClientMetadata, ip)
	}
	var meta clientMetadata
	if err := s.fetchJSON(ctx, clientID, &meta); err != nil {
		return nil, err
	}
	c, err := s.validateClient(ctx, clientID, &meta)
	if err != nil {
		return nil, err
	}
	c.fetched = s.now()
	s.clients.put(c)
	return c, nil
}

// fetchJSON GETs a client document into v through the SSRF-safe client,
// refusing a non-200 answer, a non-JSON type and a body over the bound.
func (s *Server) fetchJSON(ctx context.Context, rawURL string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, clientFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errInvalidClientMetadata, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: fetching %s: %v", errInvalidClientMetadata, rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: fetching %s: HTTP %d", errInvalidClientMetadata, rawURL, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return fmt.Errorf("%w: %s is not JSON (%s)", errInvalidClientMetadata, rawURL, ct)
		}
	}
	if resp.ContentLength > maxClientMetadataSize {
		return fmt.Errorf("%w: %s is larger than %d bytes", errInvalidClientMetadata, rawURL, maxClientMetadataSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxClientMetadataSize+1))
	if err != nil {
		return fmt.Errorf("%w: reading %s: %v", errInvalidClientMetadata, rawURL, err)
	}
	if len(body) > maxClientMetadataSize {
		return fmt.Errorf("%w: %s is larger than %d bytes", errInvalidClientMetadata, rawURL, maxClientMetadataSize)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %s: %v", errInvalidClientMetadata, rawURL, err)
	}
	return nil
}

// loopbackClient builds the metadata of the development client the spec
// allows without a document: "http://localhost" with optional redirect_uri
// (repeatable) and scope query parameters.
func loopbackClient(clientID string) (*client, error) {
	u, err := url.Parse(clientID)
	if err != nil || u.Scheme != "http" || u.Host != "localhost" || (u.Path != "" && u.Path != "/") || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%w: a loopback client_id is http://localhost with no port or path", errInvalidClientMetadata)
	}
	q := u.Query()
	for k := range q {
		if k != "redirect_uri" && k != "scope" {
			return nil, fmt.Errorf("%w: unexpected loopback client_id parameter %q", errInvalidClientMetadata, k)
		}
	}
	redirects := q["redirect_uri"]
	if len(redirects) == 0 {
		redirects = []string{"http://127.0.0.1/", "http://[::1]/"}
	}
	for _, r := range redirects {
		ru, err := url.Parse(r)
		if err != nil || ru.Scheme != "http" || !loopbackIP(ru.Hostname()) || ru.Fragment != "" {
			return nil, fmt.Errorf("%w: loopback redirect_uri must be http://127.0.0.1 or http://[::1]", errInvalidClientMetadata)
		}
	}
	scope := q.Get("scope")
	if len(q["scope"]) > 1 {
		return nil, fmt.Errorf("%w: more than one scope", errInvalidClientMetadata)
	}
	if scope == "" {
		scope = ScopeAtproto
	}
	return &client{
		ID:       clientID,
		Loopback: true,
		Meta: clientMetadata{
			ClientID:                clientID,
			ApplicationType:         "native",
			GrantTypes:              []string{"authorization_code", "refresh_token"},
			ResponseTypes:           []string{"code"},
			Scope:                   scope,
			RedirectURIs:            redirects,
			TokenEndpointAuthMethod: "none",
			DPoPBoundAccessTokens:   true,
		},
	}, nil
}

func loopbackIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validateClient checks a fetched document against the atproto profile.
func (s *Server) validateClient(ctx context.Context, clientID string, m *clientMetadata) (*client, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errInvalidClientMetadata, fmt.Sprintf(format, args...))
	}
	if m.ClientID != clientID {
		return nil, bad("client_id in the document does not match its URL")
	}
	appType := m.ApplicationType
	if appType == "" {
		appType = "web"
	}
	if appType != "web" && appType != "native" {
		return nil, bad("application_type must be web or native")
	}
	if !slices.Contains(m.GrantTypes, "authorization_code") {
		return nil, bad("grant_types must include authorization_code")
	}
	for _, g := range m.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, bad("unsupported grant type %q", g)
		}
	}
	if len(m.ResponseTypes) != 1 || m.ResponseTypes[0] != "code" {
		return nil, bad("response_types must be [code]")
	}
	if !slices.Contains(strings.Split(m.Scope, " "), ScopeAtproto) {
		return nil, bad("scope must include atproto")
	}
	if !m.DPoPBoundAccessTokens {
		return nil, bad("dpop_bound_access_tokens must be true")
	}
	if len(m.RedirectURIs) == 0 || len(m.RedirectURIs) > 20 {
		return nil, bad("redirect_uris must list 1 to 20 URIs")
	}
	cu, _ := url.Parse(clientID)
	for _, r := range m.RedirectURIs {
		if err := s.checkRedirect(r, appType, cu); err != nil {
			return nil, bad("redirect_uri %q: %v", r, err)
		}
	}
	c := &client{ID: clientID, Meta: *m}
	switch m.TokenEndpointAuthMethod {
	case "none":
	case "private_key_jwt":
		if m.TokenEndpointAuthSigningAlg != "" && m.TokenEndpointAuthSigningAlg != "ES256" {
			return nil, bad("token_endpoint_auth_signing_alg must be ES256")
		}
		if (m.JWKS == nil) == (m.JWKSURI == "") {
			return nil, bad("a private_key_jwt client gives exactly one of jwks and jwks_uri")
		}
		set := m.JWKS
		if m.JWKSURI != "" {
			ju, err := url.Parse(m.JWKSURI)
			if err != nil || (ju.Scheme != "https" && !(s.cfg.AllowPrivateClients && ju.Scheme == "http")) {
				return nil, bad("jwks_uri must be an https URL")
			}
			set = &jwkSet{}
			if err := s.fetchJSON(ctx, m.JWKSURI, set); err != nil {
				return nil, err
			}
		}
		for _, k := range set.Keys {
			if k.Use != "" && k.Use != "sig" {
				continue
			}
			if _, err := k.publicKey(); err != nil {
				continue // only EC P-256 public keys can sign ES256 assertions
			}
			c.Keys = append(c.Keys, k)
		}
		if len(c.Keys) == 0 {
			return nil, bad("no usable ES256 public key in the client's JWKS")
		}
		c.Confidential = true
	default:
		return nil, bad("token_endpoint_auth_method must be none or private_key_jwt")
	}
	if m.ClientURI != "" {
		if u, err := url.Parse(m.ClientURI); err != nil || u.Hostname() != cu.Hostname() {
			c.Meta.ClientURI = "" // not shown: it must be on the client's own host
		}
	}
	return c, nil
}

// checkRedirect validates one registered redirect URI.
func (s *Server) checkRedirect(raw, appType string, clientURL *url.URL) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("not a URL")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return fmt.Errorf("has a fragment")
	}
	switch {
	case u.Scheme == "https":
		if u.Host == "" || u.User != nil {
			return fmt.Errorf("no host")
		}
		return nil
	case u.Scheme == "http":
		if loopbackIP(u.Hostname()) && (appType == "native" || s.cfg.AllowPrivateClients) {
			return nil
		}
		return fmt.Errorf("http is only for loopback redirects of native clients")
	case appType == "native":
		// A private-use scheme: the reversed domain of the client_id.
		host := clientURL.Hostname()
		parts := strings.Split(host, ".")
		slices.Reverse(parts)
		if u.Scheme != strings.Join(parts, ".") || u.Host != "" {
			return fmt.Errorf("a custom scheme must be the client's reversed domain with a single slash")
		}
		return nil
	}
	return fmt.Errorf("unsupported scheme")
}

// matchRedirect reports whether requested is one of the client's redirect
// URIs. Loopback IP redirects match on any port (RFC 8252 7.3).
func matchRedirect(c *client, requested string) bool {
	if slices.Contains(c.Meta.RedirectURIs, requested) {
		return true
	}
	ru, err := url.Parse(requested)
	if err != nil || ru.Scheme != "http" || !loopbackIP(ru.Hostname()) {
		return false
	}
	for _, r := range c.Meta.RedirectURIs {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "http" || !loopbackIP(u.Hostname()) {
			continue
		}
		if u.Hostname() == ru.Hostname() && u.EscapedPath() == ru.EscapedPath() && u.RawQuery == ru.RawQuery {
			return true
		}
	}
	return false
}

// clientAuth is the outcome of client authentication at an endpoint.
type clientAuth struct {
	Confidential bool
	Key          string // thumbprint of the key that signed the assertion
}

type assertionClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	JTI string          `json:"jti"`
	IAT *float64        `json:"iat"`
	Exp *float64        `json:"exp"`
}

// authenticateClient checks the client authentication of a token-endpoint
// style request (form values f) for client c. Errors are "invalid_client".
func (s *Server) authenticateClient(c *client, f url.Values) (clientAuth, error) {
	typ, assertion := f.Get("client_assertion_type"), f.Get("client_assertion")
	if !c.Confidential {
		if typ != "" || assertion != "" {
			return clientAuth{}, fmt.Errorf("this client authenticates with none")
		}
		return clientAuth{}, nil
	}
	if typ != jwtBearer || assertion == "" {
		return clientAuth{}, fmt.Errorf("client assertion (private_key_jwt) required")
	}
	if len(assertion) > maxProofLength {
		return clientAuth{}, fmt.Errorf("client assertion too long")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var cl assertionClaims
	signed, sig, err := splitJWS(assertion, &h, &cl)
	if err != nil {
		return clientAuth{}, fmt.Errorf("malformed client assertion: %v", err)
	}
	if h.Alg != "ES256" {
		return clientAuth{}, fmt.Errorf("client assertion alg must be ES256")
	}
	var key *clientJWK
	for i := range c.Keys {
		k := &c.Keys[i]
		if h.Kid != "" && k.Kid != h.Kid {
			continue
		}
		pub, err := k.publicKey()
		if err == nil && verifyES256(pub, signed, sig) {
			key = k
			break
		}
	}
	if key == nil {
		return clientAuth{}, fmt.Errorf("client assertion signature does not verify with the client's keys")
	}
	if cl.Iss != c.ID || cl.Sub != c.ID {
		return clientAuth{}, fmt.Errorf("client assertion iss and sub must be the client_id")
	}
	var auds []string
	var one string
	if json.Unmarshal(cl.Aud, &one) == nil {
		auds = []string{one}
	} else if json.Unmarshal(cl.Aud, &auds) != nil {
		return clientAuth{}, fmt.Errorf("client assertion aud malformed")
	}
	if !slices.Contains(auds, s.cfg.Issuer) && !slices.Contains(auds, s.cfg.Issuer+"/oauth/token") && !slices.Contains(auds, s.cfg.Issuer+"/oauth/par") {
		return clientAuth{}, fmt.Errorf("client assertion aud must be this server")
	}
	now := s.now()
	if cl.IAT == nil || cl.JTI == "" {
		return clientAuth{}, fmt.Errorf("client assertion needs iat and jti")
	}
	iat := time.Unix(int64(*cl.IAT), 0)
	if iat.Before(now.Add(-clientAssertionMaxAge)) || iat.After(now.Add(dpopMaxSkew)) {
		return clientAuth{}, fmt.Errorf("client assertion too old or from the future")
	}
	if cl.Exp != nil && !now.Before(time.Unix(int64(*cl.Exp), 0)) {
		return clientAuth{}, fmt.Errorf("client assertion expired")
	}
	if !s.replay.add("client "+c.ID+" "+cl.JTI, now) {
		return clientAuth{}, fmt.Errorf("client assertion replayed")
	}
	return clientAuth{Confidential: true, Key: key.thumbprint()}, nil
}
