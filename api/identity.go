package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/identity"
)

type resolveHandleParams struct {
	Handle string `query:"handle"`
}

type resolveHandleOutput struct {
	DID string `json:"did"`
}

var errHandleNotFound = xerr(http.StatusBadRequest, "HandleNotFound", "Unable to resolve handle")

func (s *server) resolveHandle(ctx context.Context, p *resolveHandleParams) (*resolveHandleOutput, error) {
	h, err := syntax.ParseHandle(strings.ToLower(strings.TrimSpace(p.Handle)))
	if err != nil {
		return nil, invalidRequest("Invalid handle: %s", p.Handle)
	}
	h = h.Normalize()
	if acct, err := s.accounts.Account(ctx); err == nil && acct.Handle == h {
		return &resolveHandleOutput{DID: acct.DID.String()}, nil
	}
	// A name in our own domains that is not the account's is nobody.
	if identity.HandleAllowed(h, s.cfg.Hostname, s.cfg.AvailableUserDomains) == nil || s.resolver == nil {
		return nil, errHandleNotFound
	}
	did, err := s.resolver.ResolveHandle(ctx, h)
	if err != nil {
		return nil, errHandleNotFound
	}
	return &resolveHandleOutput{DID: did.String()}, nil
}

type updateHandleInput struct {
	Handle string `json:"handle"`
}

func (s *server) updateHandle(ctx context.Context, in *updateHandleInput) (*noOutput, error) {
	if err := rateLimit(responseHeader(ctx), limitCheck{s.handleLimit, "handle"}); err != nil {
		return nil, err
	}
	_, err := s.accounts.UpdateHandle(ctx, in.Handle)
	return nil, err
}

type didCredentials struct {
	AlsoKnownAs         []string          `json:"alsoKnownAs"`
	VerificationMethods map[string]string `json:"verificationMethods"`
	Services            map[string]any    `json:"services"`
	RotationKeys        []string          `json:"rotationKeys"`
}

func (s *server) getRecommendedDidCredentials(ctx context.Context, _ *noParams) (*didCredentials, error) {
	acct, err := s.accounts.Account(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := s.accounts.PublicKey()
	if err != nil {
		return nil, err
	}
	out := &didCredentials{
		AlsoKnownAs:         []string{"at://" + acct.Handle.String()},
		VerificationMethods: map[string]string{"atproto": pub.DIDKey()},
		Services: map[string]any{"atproto_pds": map[string]string{
			"type": "AtprotoPersonalDataServer", "endpoint": s.cfg.PublicURL,
		}},
		RotationKeys: []string{},
	}
	if s.cfg.RotationKey != nil {
		out.RotationKeys = []string{s.cfg.RotationKey.DIDKey()}
	}
	return out, nil
}

type resolveDidParams struct {
	DID string `query:"did"`
}

type resolveDidOutput struct {
	DIDDoc any `json:"didDoc"`
}

func (s *server) resolveDid(ctx context.Context, p *resolveDidParams) (*resolveDidOutput, error) {
	did, err := syntax.ParseDID(p.DID)
	if err != nil {
		return nil, invalidRequest("Invalid did: %s", p.DID)
	}
	if s.resolver == nil {
		return nil, xerr(http.StatusBadRequest, "DidNotFound", "DID not found")
	}
	id, err := s.resolver.ResolveDID(ctx, did, false)
	if err != nil {
		return nil, xerr(http.StatusBadRequest, "DidNotFound", "DID not found")
	}
	return &resolveDidOutput{DIDDoc: id.DIDDocument()}, nil
}

// Service-auth rules of the reference's getServiceAuth.
const (
	maxServiceAuthTTL      = time.Hour
	maxServiceAuthTTLNoLXM = time.Minute
	defaultServiceAuthTTL  = time.Minute
)
