package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/identity"
)

func (s *server) resolveHandle(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("handle")
	h, err := syntax.ParseHandle(strings.ToLower(strings.TrimSpace(raw)))
	if err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid handle: %s", raw))
		return
	}
	h = h.Normalize()
	if acct, err := s.accounts.Account(r.Context()); err == nil && acct.Handle == h {
		writeJSON(w, http.StatusOK, map[string]string{"did": acct.DID.String()})
		return
	}
	// A name in our own domains that is not the account's is nobody.
	if identity.HandleAllowed(h, s.cfg.Hostname, s.cfg.AvailableUserDomains) == nil {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "HandleNotFound", "Unable to resolve handle"))
		return
	}
	if s.resolver == nil {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "HandleNotFound", "Unable to resolve handle"))
		return
	}
	did, err := s.resolver.ResolveHandle(r.Context(), h)
	if err != nil {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "HandleNotFound", "Unable to resolve handle"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"did": did.String()})
}

func (s *server) updateHandle(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Handle string `json:"handle"`
	}
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := rateLimit(w, limitCheck{s.handleLimit, "handle"}); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if _, err := s.accounts.UpdateHandle(r.Context(), in.Handle); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) getRecommendedDidCredentials(w http.ResponseWriter, r *http.Request) {
	acct, err := s.accounts.Account(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	pub, err := s.accounts.PublicKey()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := map[string]any{
		"alsoKnownAs":         []string{"at://" + acct.Handle.String()},
		"verificationMethods": map[string]string{"atproto": pub.DIDKey()},
		"services": map[string]any{"atproto_pds": map[string]string{
			"type": "AtprotoPersonalDataServer", "endpoint": s.cfg.PublicURL,
		}},
		"rotationKeys": []string{},
	}
	if s.cfg.RotationKey != nil {
		out["rotationKeys"] = []string{s.cfg.RotationKey.DIDKey()}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) resolveDid(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("did")
	did, err := syntax.ParseDID(raw)
	if err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid did: %s", raw))
		return
	}
	if s.resolver == nil {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "DidNotFound", "DID not found"))
		return
	}
	id, err := s.resolver.ResolveDID(r.Context(), did, false)
	if err != nil {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "DidNotFound", "DID not found"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"didDoc": id.DIDDocument()})
}

// Service-auth rules of the reference's getServiceAuth.
const (
	maxServiceAuthTTL      = time.Hour
	maxServiceAuthTTLNoLXM = time.Minute
	defaultServiceAuthTTL  = time.Minute
)
