package auth

import "fmt"

// KindOAuth: a DPoP-bound OAuth access token (the oauth package's
// verifier); its Perms are coarse and its Scopes say exactly what it may do.
const KindOAuth Kind = "oauth"

// Scopes answer the fine questions of a scoped credential (an OAuth grant)
// that a route's coarse Permission leaves open.
type Scopes interface {
	// AllowsRepo: action ("create", "update", "delete") on records of
	// collection.
	AllowsRepo(collection, action string) bool
	// AllowsBlob: uploading a blob of MIME type mime.
	AllowsBlob(mime string) bool
	// AllowsRPC: calling method lxm at service aud ("<did>#<service id>")
	// through this server, or minting a service token for it.
	AllowsRPC(lxm, aud string) bool
}

// ScopeMissingError refuses a scoped credential a request its scope does
// not grant (403 ScopeMissingError, as the reference answers).
type ScopeMissingError struct {
	// Scope names the permission that would allow the request.
	Scope string
}

func (e *ScopeMissingError) Error() string {
	return fmt.Sprintf("Missing required scope %q", e.Scope)
}

// CanRepo returns nil if the principal may apply action to records of
// collection: it holds PermRepoWrite and, if scoped, its scope allows it.
func (p *Principal) CanRepo(collection, action string) error {
	if p.Can(PermRepoWrite) && (p.Scopes == nil || p.Scopes.AllowsRepo(collection, action)) {
		return nil
	}
	return &ScopeMissingError{Scope: "repo:" + collection + "?action=" + action}
}

// CanBlob returns nil if the principal may upload a blob of type mime.
func (p *Principal) CanBlob(mime string) error {
	if p.Can(PermBlobWrite) && (p.Scopes == nil || p.Scopes.AllowsBlob(mime)) {
		return nil
	}
	return &ScopeMissingError{Scope: "blob:" + mime}
}

// CanRPC returns nil if the principal may call lxm at the service aud
// through this server. Credentials without scopes only need PermRPC here
// (privileged methods are checked apart).
func (p *Principal) CanRPC(lxm, aud string) error {
	if p.Can(PermRPC) && (p.Scopes == nil || p.Scopes.AllowsRPC(lxm, aud)) {
		return nil
	}
	return &ScopeMissingError{Scope: "rpc:" + lxm + "?aud=" + aud}
}
