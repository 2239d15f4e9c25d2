package oauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Access tokens are HS256 JWTs (typ at+jwt) under a key derived from the
// server secret, as the reference PDS signs them with its JWT secret; so
// there is no JWKS to publish. They are checked against the session
// (family) on every request, so revoking the session kills them at once.

type accessClaims struct {
	Iss      string `json:"iss"`
	Aud      string `json:"aud"`
	Sub      string `json:"sub"`
	IAT      int64  `json:"iat"`
	Exp      int64  `json:"exp"`
	JTI      string `json:"jti"`
	Scope    string `json:"scope"`
	ClientID string `json:"client_id"`
	SID      string `json:"sid"`
	Cnf      struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
}

var accessHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"at+jwt"}`))

func (s *Server) signAccess(c *accessClaims) (string, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := accessHeader + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// parseAccess checks the signature and shape of an access token (not its
// expiry or session).
func (s *Server) parseAccess(tok string) (*accessClaims, error) {
	if len(tok) > 4096 {
		return nil, fmt.Errorf("token too long")
	}
	var h struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
	}
	var c accessClaims
	signed, sig, err := splitJWS(tok, &h, &c)
	if err != nil {
		return nil, err
	}
	if h.Alg != "HS256" || h.Typ != "at+jwt" {
		return nil, fmt.Errorf("not an OAuth access token")
	}
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte(signed))
	if !hmac.Equal(sig, m.Sum(nil)) {
		return nil, fmt.Errorf("bad signature")
	}
	if c.Iss != s.cfg.Issuer || c.Aud != s.cfg.ServiceDID || c.SID == "" || c.Cnf.JKT == "" {
		return nil, fmt.Errorf("token not issued for this server")
	}
	return &c, nil
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	Sub          string `json:"sub"`
}

// mint issues an access token and a fresh refresh token for family f (id
// fid), updating f's current refresh hash. The caller stores f.
func (s *Server) mint(fid string, f *family, now time.Time) (*tokenResponse, error) {
	refresh, hash := newSecretToken(prefixRefresh, fid)
	if f.RefreshHash != "" {
		f.Previous = append(f.Previous, f.RefreshHash)
		if len(f.Previous) > maxPrevious {
			f.Previous = f.Previous[len(f.Previous)-maxPrevious:]
		}
	}
	f.RefreshHash = hash
	f.UpdatedAt = now
	life := PublicRefreshLifetime
	if f.Confidential {
		life = ConfidentialRefreshLifetime
	}
	f.RefreshExpiresAt = now.Add(life)
	if f.RefreshExpiresAt.After(f.ExpiresAt) {
		f.RefreshExpiresAt = f.ExpiresAt
	}
	exp := now.Add(AccessTokenLifetime)
	if exp.After(f.ExpiresAt) {
		exp = f.ExpiresAt
	}
	c := &accessClaims{Iss: s.cfg.Issuer, Aud: s.cfg.ServiceDID, Sub: f.Sub, IAT: now.Unix(), Exp: exp.Unix(),
		JTI: prefixToken + randomToken(16), Scope: f.Scope, ClientID: f.ClientID, SID: fid}
	c.Cnf.JKT = f.JKT
	at, err := s.signAccess(c)
	if err != nil {
		return nil, err
	}
	return &tokenResponse{AccessToken: at, TokenType: "DPoP", ExpiresIn: int(exp.Sub(now) / time.Second),
		RefreshToken: refresh, Scope: f.Scope, Sub: f.Sub}, nil
}

// par is the pushed authorization request endpoint (RFC 9126).
func (s *Server) par(w http.ResponseWriter, r *http.Request) {
	if err := s.doPAR(w, r); err != nil {
		s.writeErr(w, r, err)
	}
}

var codeChallengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func (s *Server) doPAR(w http.ResponseWriter, r *http.Request) error {
	p, err := s.dpopAtEndpoint(w, r)
	if err != nil {
		return err
	}
	f, err := readForm(w, r)
	if err != nil {
		return err
	}
	c, err := s.resolveClient(r.Context(), f.Get("client_id"))
	if err != nil {
		return err
	}
	ca, err := s.authenticateClient(c, f)
	if err != nil {
		return oerr(http.StatusUnauthorized, "invalid_client", "%v", err)
	}
	if f.Has("request") {
		return oerr(http.StatusBadRequest, "request_not_supported", "request objects are not supported")
	}
	if f.Has("request_uri") {
		return oerr(http.StatusBadRequest, "invalid_request", "request_uri is not allowed in a pushed request")
	}
	if f.Get("response_type") != "code" {
		return oerr(http.StatusBadRequest, "unsupported_response_type", "response_type must be code")
	}
	mode := f.Get("response_mode")
	if mode != "" && mode != "query" && mode != "fragment" {
		return oerr(http.StatusBadRequest, "invalid_request", "response_mode must be query or fragment")
	}
	if f.Get("code_challenge_method") != "S256" {
		return oerr(http.StatusBadRequest, "invalid_request", "code_challenge_method must be S256")
	}
	if !codeChallengeRE.MatchString(f.Get("code_challenge")) {
		return oerr(http.StatusBadRequest, "invalid_request", "code_challenge must be a base64url SHA-256")
	}
	redirect := f.Get("redirect_uri")
	if redirect == "" && len(c.Meta.RedirectURIs) == 1 {
		redirect = c.Meta.RedirectURIs[0]
	}
	if !matchRedirect(c, redirect) {
		return oerr(http.StatusBadRequest, "invalid_request", "redirect_uri is not registered for this client")
	}
	if dj := f.Get("dpop_jkt"); dj != "" && dj != p.JKT {
		return oerr(http.StatusBadRequest, "invalid_dpop_proof", "dpop_jkt does not match the DPoP proof")
	}
	scope := f.Get("scope")
	if scope == "" {
		scope = c.Meta.Scope
	}
	perms, err := parseScope(scope, s.cfg.Lexicons)
	if err != nil {
		return err
	}
	declared, err := parseScopeTokens(c.Meta.Scope)
	if err != nil {
		return err
	}
	for _, t := range perms.tokens {
		if !declared[t] {
			return oerr(http.StatusBadRequest, "invalid_scope", "scope %q is not declared in the client metadata", t)
		}
	}
	if len(f.Get("state")) > 1024 || len(f.Get("login_hint")) > 512 {
		return oerr(http.StatusBadRequest, "invalid_request", "state or login_hint too long")
	}
	prompt := f.Get("prompt")
	switch prompt {
	case "none":
		return oerr(http.StatusBadRequest, "login_required", "this server always asks the owner")
	case "", "login", "consent", "select_account":
	default:
		return oerr(http.StatusBadRequest, "invalid_request", "unsupported prompt %q", prompt)
	}
	now := s.now()
	req := &authRequest{
		ClientID: c.ID, ClientName: c.Meta.ClientName, Confidential: ca.Confidential, ClientKey: ca.Key,
		RedirectURI: redirect, ResponseMode: mode, Scope: perms.Scope(), State: f.Get("state"),
		Challenge: f.Get("code_challenge"), LoginHint: f.Get("login_hint"), Prompt: prompt, JKT: p.JKT,
		CreatedAt: now, ExpiresAt: now.Add(PARLifetime),
	}
	id := randomToken(16)
	err = s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx, bucketRequests, id, req)
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"request_uri": requestURIPrefix + prefixRequest + id,
		"expires_in":  int(PARLifetime / time.Second),
	})
	return nil
}

// parseScopeTokens splits a declared scope into a set.
func parseScopeTokens(scope string) (map[string]bool, error) {
	if len(scope) > maxScopeLength*4 {
		return nil, oerr(http.StatusBadRequest, "invalid_client_metadata", "declared scope too long")
	}
	set := map[string]bool{}
	for _, t := range splitSpaces(scope) {
		set[t] = true
	}
	return set, nil
}

func splitSpaces(s string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}

// requestID extracts the id of a request_uri.
func requestID(requestURI string) (string, bool) {
	if len(requestURI) > 200 || len(requestURI) <= len(requestURIPrefix+prefixRequest) {
		return "", false
	}
	if requestURI[:len(requestURIPrefix+prefixRequest)] != requestURIPrefix+prefixRequest {
		return "", false
	}
	return requestURI[len(requestURIPrefix+prefixRequest):], true
}

var verifierRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// token is the token endpoint: authorization_code and refresh_token.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := s.doToken(w, r); err != nil {
		s.writeErr(w, r, err)
	}
}

func (s *Server) doToken(w http.ResponseWriter, r *http.Request) error {
	p, err := s.dpopAtEndpoint(w, r)
	if err != nil {
		return err
	}
	f, err := readForm(w, r)
	if err != nil {
		return err
	}
	c, err := s.resolveClient(r.Context(), f.Get("client_id"))
	if err != nil {
		return oerr(http.StatusUnauthorized, "invalid_client", "%v", err)
	}
	ca, err := s.authenticateClient(c, f)
	if err != nil {
		return oerr(http.StatusUnauthorized, "invalid_client", "%v", err)
	}
	var resp *tokenResponse
	switch f.Get("grant_type") {
	case "authorization_code":
		resp, err = s.exchangeCode(c, ca, p, f)
	case "refresh_token":
		if !containsStr(c.Meta.GrantTypes, "refresh_token") {
			return oerr(http.StatusBadRequest, "unauthorized_client", "this client did not register the refresh_token grant")
		}
		resp, err = s.refresh(c, ca, p, f)
	default:
		return oerr(http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func containsStr(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) exchangeCode(c *client, ca clientAuth, p *proof, f url.Values) (*tokenResponse, error) {
	id, secret, ok := splitSecretToken(prefixCode, f.Get("code"))
	if !ok {
		return nil, oerr(http.StatusBadRequest, "invalid_grant", "invalid code")
	}
	var resp *tokenResponse
	var refusal error
	err := s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		req, err := getJSON[authRequest](tx, bucketRequests, id)
		if err != nil {
			return err
		}
		if req == nil || req.CodeHash == "" || !now.Before(req.ExpiresAt) {
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "invalid or expired code")
			return nil
		}
		if !sameHash(req.CodeHash, hashSecret(secret)) {
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "invalid code")
			return nil
		}
		if req.UsedBy != "" {
			// A second use: whoever holds the code is not to be trusted,
			// so the session the first use started ends too.
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "code already used; the session it started is revoked")
			if err := tx.Bucket(bucketFamilies).Delete([]byte(req.UsedBy)); err != nil {
				return err
			}
			return nil
		}
		// From here on any failure burns the code, so that the verifier
		// cannot be guessed at.
		req.UsedBy = "burnt"
		fail := func(e error) error {
			refusal = e
			return putJSON(tx, bucketRequests, id, req)
		}
		if req.ClientID != c.ID {
			return fail(oerr(http.StatusBadRequest, "invalid_grant", "code was issued to another client"))
		}
		if f.Get("redirect_uri") != req.RedirectURI {
			return fail(oerr(http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request"))
		}
		v := f.Get("code_verifier")
		if !verifierRE.MatchString(v) {
			return fail(oerr(http.StatusBadRequest, "invalid_grant", "code_verifier missing or malformed"))
		}
		sum := sha256.Sum256([]byte(v))
		if !hmac.Equal([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(req.Challenge)) {
			return fail(oerr(http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge"))
		}
		if p.JKT != req.JKT {
			return fail(oerr(http.StatusBadRequest, "invalid_dpop_proof", "DPoP key differs from the one of the authorization request"))
		}
		if ca.Confidential != req.Confidential {
			return fail(oerr(http.StatusUnauthorized, "invalid_client", "client authentication changed"))
		}
		fam := &family{ClientID: c.ID, ClientName: req.ClientName, Confidential: ca.Confidential, ClientKey: ca.Key,
			Sub: req.Sub, Scope: req.Scope, JKT: p.JKT, CreatedAt: now}
		fam.ExpiresAt = now.Add(PublicSessionLifetime)
		if ca.Confidential {
			fam.ExpiresAt = now.Add(ConfidentialSessionLifetime)
		}
		fid := randomToken(16)
		if resp, err = s.mint(fid, fam, now); err != nil {
			return err
		}
		req.UsedBy = fid
		if err := putJSON(tx, bucketRequests, id, req); err != nil {
			return err
		}
		return putJSON(tx, bucketFamilies, fid, fam)
	})
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return nil, refusal
	}
	return resp, nil
}

func (s *Server) refresh(c *client, ca clientAuth, p *proof, f url.Values) (*tokenResponse, error) {
	fid, secret, ok := splitSecretToken(prefixRefresh, f.Get("refresh_token"))
	if !ok {
		return nil, oerr(http.StatusBadRequest, "invalid_grant", "invalid refresh token")
	}
	var narrowed *Permissions
	if sc := f.Get("scope"); sc != "" {
		var err error
		if narrowed, err = parseScope(sc, s.cfg.Lexicons); err != nil {
			return nil, err
		}
	}
	var resp *tokenResponse
	var refusal error
	err := s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		fam, err := getJSON[family](tx, bucketFamilies, fid)
		if err != nil {
			return err
		}
		if fam == nil {
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "invalid refresh token")
			return nil
		}
		h := hashSecret(secret)
		if !sameHash(fam.RefreshHash, h) {
			for _, old := range fam.Previous {
				if sameHash(old, h) {
					refusal = oerr(http.StatusBadRequest, "invalid_grant", "refresh token replayed; the session is revoked")
					return tx.Bucket(bucketFamilies).Delete([]byte(fid))
				}
			}
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "invalid refresh token")
			return nil
		}
		if !now.Before(fam.ExpiresAt) || !now.Before(fam.RefreshExpiresAt) {
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "refresh token expired")
			return tx.Bucket(bucketFamilies).Delete([]byte(fid))
		}
		if fam.ClientID != c.ID {
			refusal = oerr(http.StatusBadRequest, "invalid_grant", "refresh token was issued to another client")
			return nil
		}
		if fam.Confidential != ca.Confidential {
			refusal = oerr(http.StatusUnauthorized, "invalid_client", "client authentication changed")
			return nil
		}
		if fam.JKT != p.JKT {
			refusal = oerr(http.StatusBadRequest, "invalid_dpop_proof", "DPoP key differs from the one the session is bound to")
			return nil
		}
		if narrowed != nil {
			granted, err := parseScope(fam.Scope, s.cfg.Lexicons)
			if err != nil {
				return err
			}
			if !narrowed.subsetOf(granted) {
				refusal = oerr(http.StatusBadRequest, "invalid_scope", "a refresh cannot widen the granted scope")
				return nil
			}
			fam.Scope = narrowed.Scope()
		}
		if resp, err = s.mint(fid, fam, now); err != nil {
			return err
		}
		return putJSON(tx, bucketFamilies, fid, fam)
	})
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return nil, refusal
	}
	return resp, nil
}

// revoke is the revocation endpoint (RFC 7009): a refresh or access token
// ends its whole session. Unknown tokens are answered 200, as the RFC says.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("DPoP") != "" {
		if _, err := s.dpopAtEndpoint(w, r); err != nil {
			s.writeErr(w, r, err)
			return
		}
	}
	f, err := readForm(w, r)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	tok := f.Get("token")
	var fid string
	if id, _, ok := splitSecretToken(prefixRefresh, tok); ok {
		fid = id
	} else if c, err := s.parseAccess(tok); err == nil {
		fid = c.SID
	}
	if fid != "" {
		err := s.db.Update(func(tx *bolt.Tx) error {
			fam, err := getJSON[family](tx, bucketFamilies, fid)
			if err != nil || fam == nil {
				return err
			}
			if cid := f.Get("client_id"); cid != "" && cid != fam.ClientID {
				return nil // not this client's to revoke
			}
			if id, secret, ok := splitSecretToken(prefixRefresh, tok); ok && id == fid && !sameHash(fam.RefreshHash, hashSecret(secret)) {
				return nil // a guessed or stale token revokes nothing
			}
			return tx.Bucket(bucketFamilies).Delete([]byte(fid))
		})
		if err != nil {
			s.writeErr(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}
