package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/pdsbox/pds/auth"
)

// Verify implements auth.Verifier: it claims requests with an
// "Authorization: DPoP" header and turns a valid access token into a
// principal whose permissions are what the token's scope grants (coarse, per
// route) and whose Scopes answer the fine questions (which collection,
// which MIME type, which method at which service).
func (s *Server) Verify(ctx context.Context, req auth.Request) (*auth.Principal, error) {
	h := req.Authorization
	if len(h) <= 5 || !strings.EqualFold(h[:5], "dpop ") {
		return nil, auth.ErrOtherCredential
	}
	path := req.URL
	if u, err := url.Parse(req.URL); err == nil {
		path = u.EscapedPath()
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, s.cfg.Issuer+path, nil)
	if err != nil {
		return nil, resourceErr("InvalidToken", "invalid_request", "bad request URL")
	}
	r.Header.Set("Authorization", h)
	if req.DPoP != "" {
		r.Header.Set("DPoP", req.DPoP)
	}
	p, err := s.authenticate(r)
	if err != nil {
		var re *ResourceError
		if errors.As(err, &re) {
			re.Nonce = s.nonces.current()
		}
		return nil, err
	}
	perms := p.Permissions
	granted := []auth.Permission{auth.PermAccountRead}
	if perms.AllowsAccount("email", "read") {
		granted = append(granted, auth.PermAccountEmail)
	}
	if perms.AllowsIdentity("handle") {
		granted = append(granted, auth.PermIdentityHandle)
	}
	if perms.AllowsIdentity("*") {
		granted = append(granted, auth.PermIdentityPLC)
	}
	if perms.generic || perms.has("repo") {
		granted = append(granted, auth.PermRepoWrite)
	}
	if perms.generic || perms.has("blob") {
		granted = append(granted, auth.PermBlobWrite)
	}
	if perms.generic || perms.chat || perms.has("rpc") {
		granted = append(granted, auth.PermRPC, auth.PermPreferences)
	}
	if perms.chat {
		granted = append(granted, auth.PermRPCPrivileged)
	}
	return &auth.Principal{DID: p.DID, Kind: auth.KindOAuth, Perms: granted, Scopes: perms}, nil
}

// Nonce is the DPoP nonce to hand out now (the api sets it on every
// response to a DPoP request).
func (s *Server) Nonce() string { return s.nonces.current() }
