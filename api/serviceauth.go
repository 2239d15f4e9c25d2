package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
)

type getServiceAuthParams struct {
	Aud string `query:"aud"`
	LXM string `query:"lxm"`
	Exp *int64 `query:"exp"`
}

type getServiceAuthOutput struct {
	Token string `json:"token"`
}

func (s *server) getServiceAuth(ctx context.Context, p *getServiceAuthParams) (*getServiceAuthOutput, error) {
	aud, lxm := p.Aud, p.LXM
	audDID, _, _ := strings.Cut(aud, "#")
	if _, err := syntax.ParseDID(audDID); err != nil {
		return nil, invalidRequest("Invalid aud: %s", aud)
	}
	if lxm != "" {
		if _, err := syntax.ParseNSID(lxm); err != nil {
			return nil, invalidRequest("Invalid lxm: %s", lxm)
		}
		if protectedMethods[lxm] {
			return nil, invalidRequest("cannot request a service auth token for the following protected method: %s", lxm)
		}
	}
	principal := principalFrom(ctx)
	if lxm != "" && privilegedMethods[lxm] && !principal.Can(auth.PermRPCPrivileged) {
		return nil, invalidRequest("insufficient access to request a service auth token for the following method: %s", lxm)
	}
	// A scoped token mints service tokens only for the methods and
	// services its rpc: permissions name, never method-less ones.
	rpcLXM := lxm
	if rpcLXM == "" {
		rpcLXM = "*"
	}
	if principal.Scopes != nil {
		if err := principal.CanRPC(rpcLXM, aud); err != nil || lxm == "" {
			return nil, &auth.ScopeMissingError{Scope: "rpc:" + rpcLXM + "?aud=" + aud}
		}
	}
	now := time.Now()
	ttl := defaultServiceAuthTTL
	if p.Exp != nil {
		ttl = time.Unix(*p.Exp, 0).Sub(now)
		if ttl <= 0 {
			return nil, xerr(http.StatusBadRequest, "BadExpiration", "expiration is in past")
		}
		if ttl > maxServiceAuthTTL {
			return nil, xerr(http.StatusBadRequest, "BadExpiration", "cannot request a token with an expiration more than an hour in the future")
		}
		if lxm == "" && ttl > maxServiceAuthTTLNoLXM {
			return nil, xerr(http.StatusBadRequest, "BadExpiration", "cannot request a method-less token with an expiration more than a minute in the future")
		}
	}
	key, err := s.accounts.SigningKey()
	if err != nil {
		return nil, err
	}
	tok, err := auth.SignServiceJWT(key, principal.DID, aud, lxm, ttl, now)
	if err != nil {
		return nil, err
	}
	return &getServiceAuthOutput{Token: tok}, nil
}
