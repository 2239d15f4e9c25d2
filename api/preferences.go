package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/pdsbox/pds/auth"
)

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
	full := principalFrom(r.Context()).Can(auth.PermAccountEmail)
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
	full := principalFrom(r.Context()).Can(auth.PermAccountEmail)
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
