package api

import (
	"errors"
	"net/http"

	"github.com/pdsbox/pds/auth"
)

func (s *server) createAppPassword(w http.ResponseWriter, r *http.Request) {
	var in appPasswordInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// The name rule (trimmed, 1 to auth.MaxAppPasswordNameLength
	// characters) is auth's.
	ap, err := s.auth.CreateAppPassword(r.Context(), in.Name, in.Privileged)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": ap.Name, "password": ap.Password, "createdAt": ap.CreatedAt.UTC().Format(timeFormat), "privileged": ap.Privileged,
	})
}

func (s *server) listAppPasswords(w http.ResponseWriter, r *http.Request) {
	aps, err := s.auth.ListAppPasswords(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	list := make([]map[string]any, 0, len(aps))
	for _, ap := range aps {
		list = append(list, map[string]any{"name": ap.Name, "createdAt": ap.CreatedAt.UTC().Format(timeFormat), "privileged": ap.Privileged})
	}
	writeJSON(w, http.StatusOK, map[string]any{"passwords": list})
}

func (s *server) revokeAppPassword(w http.ResponseWriter, r *http.Request) {
	var in appPasswordInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	err := s.auth.RevokeAppPassword(r.Context(), in.Name)
	if err != nil && !errors.Is(err, auth.ErrAppPasswordNotFound) {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
