package api

import (
	"encoding/json"
	"net/http"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

func (s *server) getPreferences(w http.ResponseWriter, r *http.Request) {
	if s.proxiedElsewhere(r) {
		s.proxy(w, r)
		return
	}
	if err := scopedRPC(r, "app.bsky.actor.getPreferences", s.appViewAud()); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	prefs, err := s.accounts.PreferencesAs(prefsAccess(r))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"preferences": prefs})
}

// prefsAccess is what the caller may do with the preferences: everything
// with the account's own session, less with an app password (account owns
// the rule).
func prefsAccess(r *http.Request) account.PrefsAccess {
	if principalFrom(r.Context()).Can(auth.PermAccountEmail) {
		return account.PrefsFull
	}
	return account.PrefsNoPersonal
}

func (s *server) putPreferences(w http.ResponseWriter, r *http.Request) {
	if s.proxiedElsewhere(r) {
		s.proxy(w, r)
		return
	}
	if err := scopedRPC(r, "app.bsky.actor.putPreferences", s.appViewAud()); err != nil {
		writeError(w, r, s.log, err)
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
	if err := s.accounts.PutPreferencesAs(prefsAccess(r), in.Preferences); err != nil {
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
