package oauth

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	atpauth "github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Scope tokens of the atproto profile besides the granular permissions.
const (
	ScopeAtproto           = "atproto"
	ScopeTransitionGeneric = "transition:generic"
	ScopeTransitionEmail   = "transition:email"
	ScopeTransitionChat    = "transition:chat.bsky"
)

// maxScopeLength bounds a scope string (a permission set expands further,
// but from our own catalog).
const maxScopeLength = 4096

// errInvalidScope is the OAuth "invalid_scope" error.
var errInvalidScope = errors.New("invalid_scope")

// Permissions is what a granted scope allows. Its zero value allows
// nothing. It is immutable once built and safe for concurrent use.
type Permissions struct {
	tokens  []string             // the scope, token by token
	perms   []atpauth.Permission // granular permissions, include: expanded
	generic bool
	email   bool
	chat    bool
}

// Scope returns the scope string the permissions were parsed from.
func (p *Permissions) Scope() string { return strings.Join(p.tokens, " ") }

// Has reports whether the scope holds the token exactly.
func (p *Permissions) Has(token string) bool { return slices.Contains(p.tokens, token) }

// parseScope parses a space-separated scope with indigo's permission
// parser. It must hold "atproto"; every other token must be a transition
// scope or a valid permission, and include: sets must resolve in catalog
// (nil: none resolve). Tokens are deduplicated, order kept.
func parseScope(scope string, catalog lexicon.Catalog) (*Permissions, error) {
	if len(scope) > maxScopeLength {
		return nil, fmt.Errorf("%w: scope too long", errInvalidScope)
	}
	p := &Permissions{}
	atproto := false
	for _, tok := range strings.Split(scope, " ") {
		if tok == "" || slices.Contains(p.tokens, tok) {
			continue
		}
		switch tok {
		case ScopeAtproto:
			atproto = true
		case ScopeTransitionGeneric:
			p.generic = true
		case ScopeTransitionEmail:
			p.email = true
		case ScopeTransitionChat:
			p.chat = true
		default:
			perm, err := atpauth.ParsePermissionString(tok)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", errInvalidScope, tok, err)
			}
			if perm.Resource == "include" {
				set, err := expandInclude(perm, catalog)
				if err != nil {
					return nil, fmt.Errorf("%w: %q: %v", errInvalidScope, tok, err)
				}
				p.perms = append(p.perms, set...)
			} else {
				p.perms = append(p.perms, *perm)
			}
		}
		p.tokens = append(p.tokens, tok)
	}
	if !atproto {
		return nil, fmt.Errorf("%w: the atproto scope is required", errInvalidScope)
	}
	return p, nil
}

// permissionSet resolves a permission set (a lexicon of type
// "permission-set") from the catalog.
func permissionSet(nsid string, catalog lexicon.Catalog) (*lexicon.SchemaPermissionSet, error) {
	if catalog == nil {
		return nil, fmt.Errorf("permission set %s is not known here", nsid)
	}
	sch, err := catalog.Resolve(nsid)
	if err != nil {
		return nil, fmt.Errorf("permission set %s is not known here", nsid)
	}
	set, ok := sch.Def.(lexicon.SchemaPermissionSet)
	if !ok {
		return nil, fmt.Errorf("%s is not a permission set", nsid)
	}
	return &set, nil
}

// expandInclude turns include:<nsid>[?aud=] into the set's permissions.
// A set may only grant resources in its own namespace (the NSID without
// its name), and rpc permissions with inheritAud take the include's aud.
func expandInclude(inc *atpauth.Permission, catalog lexicon.Catalog) ([]atpauth.Permission, error) {
	set, err := permissionSet(inc.NSID, catalog)
	if err != nil {
		return nil, err
	}
	nsid, err := syntax.ParseNSID(inc.NSID)
	if err != nil {
		return nil, err
	}
	ns := strings.TrimSuffix(string(nsid), nsid.Name())
	inNS := func(ids []string) bool {
		for _, id := range ids {
			if !strings.HasPrefix(id, ns) {
				return false
			}
		}
		return true
	}
	var out []atpauth.Permission
	for _, sp := range set.Permissions {
		p := atpauth.Permission{Type: "permission", Resource: sp.Resource, Action: sp.Action, Collection: sp.Collection, Endpoint: sp.LXM, Audience: sp.Audience}
		switch sp.Resource {
		case "repo":
			if !inNS(sp.Collection) {
				return nil, fmt.Errorf("permission set %s reaches outside its namespace", inc.NSID)
			}
		case "rpc":
			if !inNS(sp.LXM) {
				return nil, fmt.Errorf("permission set %s reaches outside its namespace", inc.NSID)
			}
			if sp.InheritAud {
				p.Audience = inc.Audience
			}
			if p.Audience == "" {
				continue // no audience to grant it for
			}
		default:
			continue // sets only carry repo and rpc permissions here
		}
		out = append(out, p)
	}
	return out, nil
}

// AllowsRepo reports whether the scope lets the app apply action ("create",
// "update" or "delete") to records of collection.
func (p *Permissions) AllowsRepo(collection, action string) bool {
	if p.generic {
		return true
	}
	for _, perm := range p.perms {
		if perm.Resource != "repo" {
			continue
		}
		if !slices.Contains(perm.Collection, "*") && !slices.Contains(perm.Collection, collection) {
			continue
		}
		if len(perm.Action) == 0 || slices.Contains(perm.Action, action) {
			return true
		}
	}
	return false
}

// AllowsBlob reports whether the scope lets the app upload a blob of the
// MIME type mime.
func (p *Permissions) AllowsBlob(mime string) bool {
	if p.generic {
		return true
	}
	mime = strings.ToLower(strings.TrimSpace(strings.Split(mime, ";")[0]))
	for _, perm := range p.perms {
		if perm.Resource != "blob" {
			continue
		}
		for _, acc := range perm.Accept {
			if ok, _ := path.Match(strings.ToLower(acc), mime); ok || acc == "*/*" {
				return true
			}
		}
	}
	return false
}

// AllowsRPC reports whether the scope lets the app call method lxm at the
// service aud ("<did>#<service id>") through this server.
func (p *Permissions) AllowsRPC(lxm, aud string) bool {
	if strings.HasPrefix(lxm, "chat.bsky.") {
		if p.chat {
			return true
		}
	} else if p.generic {
		return true
	}
	for _, perm := range p.perms {
		if perm.Resource != "rpc" {
			continue
		}
		if perm.Audience != "*" && perm.Audience != aud {
			continue
		}
		if slices.Contains(perm.Endpoint, "*") || slices.Contains(perm.Endpoint, lxm) {
			return true
		}
	}
	return false
}

// AllowsAccount reports whether the scope grants account attribute attr
// ("email" or "repo") for action ("read" or "manage"; manage implies read).
func (p *Permissions) AllowsAccount(attr, action string) bool {
	if attr == "email" && action == "read" && p.email {
		return true
	}
	for _, perm := range p.perms {
		if perm.Resource != "account" || perm.Attribute != attr {
			continue
		}
		granted := "read"
		if len(perm.Action) > 0 {
			granted = perm.Action[0]
		}
		if granted == "manage" || granted == action {
			return true
		}
	}
	return false
}

// AllowsIdentity reports whether the scope grants identity attribute attr
// ("handle" or "*"; "*" covers every attribute).
func (p *Permissions) AllowsIdentity(attr string) bool {
	for _, perm := range p.perms {
		if perm.Resource == "identity" && (perm.Attribute == "*" || perm.Attribute == attr) {
			return true
		}
	}
	return false
}

// has reports whether the scope holds a granular permission of resource.
func (p *Permissions) has(resource string) bool {
	for _, perm := range p.perms {
		if perm.Resource == resource {
			return true
		}
	}
	return false
}

// subsetOf reports whether every token of p is in q: a refresh may narrow
// a grant, never widen it.
func (p *Permissions) subsetOf(q *Permissions) bool {
	for _, t := range p.tokens {
		if !slices.Contains(q.tokens, t) {
			return false
		}
	}
	return true
}
