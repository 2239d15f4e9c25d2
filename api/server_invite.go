package api

import (
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

type createInviteCodeInput struct {
	UseCount   *int64 `json:"useCount"`
	ForAccount string `json:"forAccount"`
}

// createInviteCode (admin, by its route's permission) answers the server's one invite code: a
// single-account server has exactly one, good for creating that account.
// `pds account invite` asks a running server this way, as `pds account
// create` asks it to create the account.
func (s *server) createInviteCode(w http.ResponseWriter, r *http.Request) {
	var in createInviteCodeInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if in.UseCount == nil {
		writeError(w, r, s.log, invalidRequest("Input must have the property \"useCount\""))
		return
	}
	if *in.UseCount < 1 {
		writeError(w, r, s.log, invalidRequest("Input/useCount must be an integer of at least 1"))
		return
	}
	if in.ForAccount != "" {
		if _, err := syntax.ParseDID(in.ForAccount); err != nil {
			writeError(w, r, s.log, invalidRequest("Input/forAccount must be a valid did"))
			return
		}
	}
	code, err := s.accounts.InviteCode()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"code": code})
}
