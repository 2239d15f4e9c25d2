package api

import (
	"encoding/json"

	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
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
	if acct, err := s.auth.Account(r.Context()); err == nil && acct.Handle == h {
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
	acct, err := s.auth.Account(r.Context())
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
	claims := claimsFrom(r.Context())
	if lxm != "" && privilegedMethods[lxm] && claims.Scope != auth.ScopeAccess && claims.Scope != auth.ScopeAppPassPrivileged {
		writeError(w, r, s.log, invalidRequest("insufficient access to request a service auth token for the following method: %s", lxm))
		return
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
	tok, err := auth.SignServiceJWT(key, claims.DID, aud, lxm, ttl, now)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

func (s *server) getPreferences(w http.ResponseWriter, r *http.Request) {
	if s.proxiedElsewhere(r) {
		s.proxy(w, r)
		return
	}
	prefs, err := s.accounts.Preferences()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	full := claimsFrom(r.Context()).Scope == auth.ScopeAccess
	out := make([]json.RawMessage, 0, len(prefs))
	for _, p := range prefs {
		// App passwords do not see personal details (birth date).
		if !full && prefType(p) == "app.bsky.actor.defs#personalDetailsPref" {
			continue
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"preferences": out})
}

func prefType(p json.RawMessage) string {
	var t struct {
		Type string `json:"$type"`
	}
	_ = json.Unmarshal(p, &t)
	return t.Type
}

func (s *server) putPreferences(w http.ResponseWriter, r *http.Request) {
	if s.proxiedElsewhere(r) {
		s.proxy(w, r)
		return
	}
	var in struct {
		Preferences []json.RawMessage `json:"preferences"`
	}
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if in.Preferences == nil {
		writeError(w, r, s.log, invalidRequest("preferences is required"))
		return
	}
	full := claimsFrom(r.Context()).Scope == auth.ScopeAccess
	var kept []json.RawMessage
	if !full {
		// An app password cannot see personal details, so it cannot drop
		// them either: keep the stored ones.
		old, err := s.accounts.Preferences()
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		for _, p := range old {
			if prefType(p) == "app.bsky.actor.defs#personalDetailsPref" {
				kept = append(kept, p)
			}
		}
	}
	for i, p := range in.Preferences {
		t := prefType(p)
		if t == "" {
			writeError(w, r, s.log, invalidRequest("Preference at index %d is missing a $type", i))
			return
		}
		if !strings.HasPrefix(t, "app.bsky.") {
			writeError(w, r, s.log, invalidRequest("Some preferences are not in the app.bsky namespace"))
			return
		}
		if !full && t == "app.bsky.actor.defs#personalDetailsPref" {
			writeError(w, r, s.log, invalidRequest("Do not have authorization to set preferences."))
			return
		}
		kept = append(kept, p)
	}
	if kept == nil {
		kept = []json.RawMessage{}
	}
	if err := s.accounts.PutPreferences(kept); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// proxiedElsewhere reports whether an atproto-proxy header names a service
// other than the configured AppView, so that a local method is forwarded.
func (s *server) proxiedElsewhere(r *http.Request) bool {
	h := r.Header.Get("Atproto-Proxy")
	return h != "" && h != s.cfg.AppView.DID+"#bsky_appview"
}
