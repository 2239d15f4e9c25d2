package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
)

func (s *server) getServiceAuth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	aud := q.Get("aud")
	audDID, _, _ := strings.Cut(aud, "#")
	if _, err := syntax.ParseDID(audDID); err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid aud: %s", aud))
		return
	}
	lxm := q.Get("lxm")
	if lxm != "" {
		if _, err := syntax.ParseNSID(lxm); err != nil {
			writeError(w, r, s.log, invalidRequest("Invalid lxm: %s", lxm))
			return
		}
		if protectedMethods[lxm] {
			writeError(w, r, s.log, invalidRequest("cannot request a service auth token for the following protected method: %s", lxm))
			return
		}
	}
	if lxm != "" && privilegedMethods[lxm] && !principalFrom(r.Context()).Can(auth.PermRPCPrivileged) {
		writeError(w, r, s.log, invalidRequest("insufficient access to request a service auth token for the following method: %s", lxm))
		return
	}
	// A scoped token mints service tokens only for the methods and
	// services its rpc: permissions name, never method-less ones.
	rpcLXM := lxm
	if rpcLXM == "" {
		rpcLXM = "*"
	}
	if p := principalFrom(r.Context()); p.Scopes != nil {
		if err := p.CanRPC(rpcLXM, aud); err != nil || lxm == "" {
			writeError(w, r, s.log, &auth.ScopeMissingError{Scope: "rpc:" + rpcLXM + "?aud=" + aud})
			return
		}
	}
	now := time.Now()
	ttl := defaultServiceAuthTTL
	if v := q.Get("exp"); v != "" {
		exp, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, r, s.log, invalidRequest("Invalid exp"))
			return
		}
		ttl = time.Unix(exp, 0).Sub(now)
		if ttl <= 0 {
			writeError(w, r, s.log, xerr(http.StatusBadRequest, "BadExpiration", "expiration is in past"))
			return
		}
		if ttl > maxServiceAuthTTL {
			writeError(w, r, s.log, xerr(http.StatusBadRequest, "BadExpiration", "cannot request a token with an expiration more than an hour in the future"))
			return
		}
		if lxm == "" && ttl > maxServiceAuthTTLNoLXM {
			writeError(w, r, s.log, xerr(http.StatusBadRequest, "BadExpiration", "cannot request a method-less token with an expiration more than a minute in the future"))
			return
		}
	}
	key, err := s.accounts.SigningKey()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	tok, err := auth.SignServiceJWT(key, principalFrom(r.Context()).DID, aud, lxm, ttl, now)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}
