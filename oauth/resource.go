package oauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// Principal is the caller of a request authenticated with an OAuth access
// token: the account, the app, and what its scope allows.
type Principal struct {
	DID         syntax.DID
	ClientID    string
	SessionID   string
	Permissions *Permissions
}

// ResourceError is a refused OAuth request at the resource server: the
// status, the XRPC error name and message, and the WWW-Authenticate header
// the client reads (use_dpop_nonce → retry with the DPoP-Nonce header;
// invalid_token → refresh).
type ResourceError struct {
	Status          int
	Name            string
	Message         string
	WWWAuthenticate string
	// Nonce is the DPoP nonce to send back (DPoP-Nonce header).
	Nonce string
}

func (e *ResourceError) Error() string { return e.Name + ": " + e.Message }

func resourceErr(name, wwwErr, msg string) *ResourceError {
	return &ResourceError{Status: http.StatusUnauthorized, Name: name, Message: msg,
		WWWAuthenticate: fmt.Sprintf(`DPoP algs="ES256", error=%q, error_description=%q`, wwwErr, msg)}
}

// IsDPoP reports whether the request carries an "Authorization: DPoP"
// header, which only Authenticate can verify.
func IsDPoP(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	return len(h) > 5 && strings.EqualFold(h[:5], "dpop ")
}

// Authenticate verifies the DPoP-bound access token of a request to the
// resource server: the token's signature, expiry and live session, and a
// DPoP proof for this method and URL (the issuer plus the path), signed by
// the token's key, carrying its hash (ath) and a current nonce. It always
// sets the DPoP-Nonce header on w. Errors are *ResourceError.
func (s *Server) Authenticate(w http.ResponseWriter, r *http.Request) (*Principal, error) {
	w.Header().Set("DPoP-Nonce", s.nonces.current())
	return s.authenticate(r)
}

func (s *Server) authenticate(r *http.Request) (*Principal, error) {
	if !IsDPoP(r) {
		return nil, resourceErr("InvalidToken", "invalid_request", "DPoP authorization required")
	}
	tok := strings.TrimSpace(r.Header.Get("Authorization")[5:])
	c, err := s.parseAccess(tok)
	if err != nil {
		return nil, resourceErr("InvalidToken", "invalid_token", "invalid access token")
	}
	p, err := s.verifyProof(r.Header.Values("DPoP"), r.Method, s.endpointURL(r.URL.EscapedPath()), tok)
	var de *dpopError
	switch {
	case errors.Is(err, errUseNonce):
		return nil, resourceErr("use_dpop_nonce", "use_dpop_nonce", "Resource server requires nonce in DPoP proof")
	case errors.As(err, &de):
		return nil, resourceErr("invalid_dpop_proof", "invalid_dpop_proof", de.desc)
	case err != nil:
		return nil, err
	}
	if p.JKT != c.Cnf.JKT {
		return nil, resourceErr("invalid_dpop_proof", "invalid_dpop_proof", "DPoP proof signed by another key than the token's")
	}
	now := s.now()
	if now.Unix() >= c.Exp {
		return nil, resourceErr("ExpiredToken", "invalid_token", "token expired")
	}
	var fam *family
	if err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		fam, err = getJSON[family](tx, bucketFamilies, c.SID)
		return err
	}); err != nil {
		return nil, err
	}
	if fam == nil || !now.Before(fam.ExpiresAt) || fam.Sub != c.Sub || fam.JKT != c.Cnf.JKT {
		return nil, resourceErr("InvalidToken", "invalid_token", "token revoked")
	}
	did, err := syntax.ParseDID(c.Sub)
	if err != nil {
		return nil, resourceErr("InvalidToken", "invalid_token", "invalid token subject")
	}
	// The token's scope is the one granted when it was minted; a later
	// narrowing refresh applies to tokens minted after it.
	perms, err := parseScope(c.Scope, s.cfg.Lexicons)
	if err != nil {
		return nil, resourceErr("InvalidToken", "invalid_token", "token scope no longer valid")
	}
	return &Principal{DID: did, ClientID: c.ClientID, SessionID: c.SID, Permissions: perms}, nil
}
