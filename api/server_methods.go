package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
)

func (s *server) describeServer(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{
		"did":                  s.cfg.ServiceDID,
		"availableUserDomains": s.cfg.AvailableUserDomains,
		"inviteCodeRequired":   s.cfg.InviteRequired,
		"links":                map[string]string{},
		"contact":              map[string]string{},
	}
	if s.cfg.BlobUploadLimit > 0 {
		out["blobUploadLimit"] = s.cfg.BlobUploadLimit
	}
	if s.cfg.PrivacyPolicyURL != "" {
		out["links"].(map[string]string)["privacyPolicy"] = s.cfg.PrivacyPolicyURL
	}
	if s.cfg.TermsOfServiceURL != "" {
		out["links"].(map[string]string)["termsOfService"] = s.cfg.TermsOfServiceURL
	}
	if s.cfg.ContactEmail != "" {
		out["contact"].(map[string]string)["email"] = s.cfg.ContactEmail
	}
	writeJSON(w, http.StatusOK, out)
}

type createAccountInput struct {
	Email      string `json:"email"`
	Handle     string `json:"handle"`
	DID        string `json:"did"`
	InviteCode string `json:"inviteCode"`
	Password   string `json:"password"`
	PLCOp      any    `json:"plcOp"`
}

// sessionOutput is the answer of createAccount, createSession and
// refreshSession.
func (s *server) sessionOutput(sess *auth.Session) map[string]any {
	out := map[string]any{
		"accessJwt":       sess.AccessJWT,
		"refreshJwt":      sess.RefreshJWT,
		"handle":          sess.Handle.String(),
		"did":             sess.DID.String(),
		"emailConfirmed":  false,
		"emailAuthFactor": false,
		"active":          true,
	}
	if sess.Email != "" {
		out["email"] = sess.Email
	}
	return out
}

func (s *server) createAccount(w http.ResponseWriter, r *http.Request) {
	var in createAccountInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
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

type createSessionInput struct {
	Identifier      string `json:"identifier"`
	Password        string `json:"password"`
	AuthFactorToken string `json:"authFactorToken"`
	AllowTakendown  bool   `json:"allowTakendown"`
}

func (s *server) createSession(w http.ResponseWriter, r *http.Request) {
	var in createSessionInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if in.Identifier == "" || in.Password == "" {
		writeError(w, r, s.log, invalidRequest("identifier and password are required"))
		return
	}
	ident := strings.ToLower(strings.TrimSpace(in.Identifier))
	if err := rateLimit(w, limitCheck{s.loginIP, s.clientIP(r)}, limitCheck{s.loginID, ident}); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	sess, err := s.auth.Login(r.Context(), in.Identifier, in.Password)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sessionOutput(sess))
}

func (s *server) refreshSession(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearer(r)
	if !ok {
		writeError(w, r, s.log, errAuthMissing)
		return
	}
	sess, err := s.auth.Refresh(r.Context(), tok)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sessionOutput(sess))
}

func (s *server) getSession(w http.ResponseWriter, r *http.Request) {
	claims := claimsFrom(r.Context())
	acct, err := s.auth.Account(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := map[string]any{
		"handle":          acct.Handle.String(),
		"did":             acct.DID.String(),
		"emailConfirmed":  false,
		"emailAuthFactor": false,
		"active":          !acct.Deactivated,
	}
	if acct.Deactivated {
		out["status"] = "deactivated"
	}
	if acct.Email != "" && claims.Scope == auth.ScopeAccess {
		out["email"] = acct.Email
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) deleteSession(w http.ResponseWriter, r *http.Request) {
	tok, ok := bearer(r)
	if !ok {
		writeError(w, r, s.log, errAuthMissing)
		return
	}
	if err := s.auth.RevokeSession(r.Context(), tok); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type appPasswordInput struct {
	Name       string `json:"name"`
	Privileged bool   `json:"privileged"`
}

func (s *server) createAppPassword(w http.ResponseWriter, r *http.Request) {
	var in appPasswordInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	name := strings.TrimSpace(in.Name)
	if name == "" || len(name) > 100 {
		writeError(w, r, s.log, invalidRequest("app password names are 1 to 100 characters"))
		return
	}
	ap, err := s.auth.CreateAppPassword(r.Context(), name, in.Privileged)
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

// timeFormat is the atproto datetime format the reference answers with.
const timeFormat = "2006-01-02T15:04:05.000Z"
