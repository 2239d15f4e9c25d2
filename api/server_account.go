package api

import (
	"net/http"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/identity"
)

func (s *server) createAccount(w http.ResponseWriter, r *http.Request) {
	var in createAccountInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// Admin credentials: every attempt is counted (429 beyond the budget),
	// and with the account in place the answer is the same whatever the
	// password: wrong and right ones used to answer differently, an oracle
	// for guessing it.
	if hasBasicAuth(r) {
		if err := s.limitCreateAdmin(w, r); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if s.accounts.Exists() {
			writeError(w, r, s.log, account.ErrAccountExists)
			return
		}
	}
	if !s.isAdmin(r) && s.cfg.InviteRequired {
		if in.InviteCode == "" {
			writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidInviteCode", "No invite code provided"))
			return
		}
		if err := s.accounts.CheckInviteCode(in.InviteCode); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	if in.PLCOp != nil || in.DID != "" {
		s.createMigratingAccount(w, r, in)
		return
	}
	if _, _, err := s.accounts.Create(r.Context(), account.CreateParams{Handle: in.Handle, Email: in.Email, Password: in.Password}); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	sess, err := s.auth.Login(r.Context(), in.Handle, in.Password)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := map[string]any{
		"accessJwt": sess.AccessJWT, "refreshJwt": sess.RefreshJWT,
		"handle": sess.Handle.String(), "did": sess.DID.String(),
	}
	// The document lets the client find its PDS without a lookup.
	if pub, err := s.accounts.PublicKey(); err == nil {
		out["didDoc"] = identity.DIDWebDocument(sess.DID, sess.Handle, pub, s.cfg.PublicURL)
	}
	writeJSON(w, http.StatusOK, out)
}
