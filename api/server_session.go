package api

import (
	"context"
	"net/http"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

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
// createSession and refreshSession set emailAuthFactor (withFactor).
func (s *server) sessionOutput(sess *auth.Session) map[string]any {
	out := map[string]any{
		"accessJwt":       sess.AccessJWT,
		"refreshJwt":      sess.RefreshJWT,
		"handle":          sess.Handle.String(),
		"did":             sess.DID.String(),
		"emailConfirmed":  sess.EmailConfirmed,
		"emailAuthFactor": false,
		"active":          true,
	}
	if sess.Email != "" {
		out["email"] = sess.Email
	}
	return out
}

// withFactor sets out's emailAuthFactor.
func (s *server) withFactor(ctx context.Context, out map[string]any) (map[string]any, error) {
	factor, err := s.emailAuthFactor(ctx)
	out["emailAuthFactor"] = factor
	return out, err
}

// emailAuthFactor reports whether the email second factor is on.
func (s *server) emailAuthFactor(ctx context.Context) (bool, error) {
	if s.email == nil {
		return false, nil
	}
	return s.email.AuthFactor(ctx)
}

// login checks a createSession: with the email flows, through the email
// second factor.
func (s *server) login(ctx context.Context, in *createSessionInput) (*auth.Session, error) {
	if s.email == nil {
		return s.auth.Login(ctx, in.Identifier, in.Password)
	}
	return s.email.Login(ctx, in.Identifier, in.Password, in.AuthFactorToken)
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
	// Per address always; per identifier (all spellings of the account
	// share one budget) unless the address is one the owner recently used,
	// so guesses against the owner's handle cannot lock the owner out.
	addr := s.addrKey(r)
	known := s.knownAddrs.Known(addr)
	checks := []limitCheck{{s.loginIP, addr}}
	if !known {
		checks = append(checks, limitCheck{s.loginID, s.auth.LoginKey(in.Identifier)})
	}
	if err := rateLimit(w, checks...); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	sess, err := s.login(auth.WithPriorityIf(r.Context(), known), &in)
	if err == nil {
		// As the reference: the right password of a taken-down account
		// answers AccountTakedown, and no session is handed out.
		if err = s.accounts.CheckStatus(r.Context(), account.ActionAuthenticate); err != nil {
			_ = s.auth.RevokeSession(r.Context(), sess.RefreshJWT)
		}
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.knownAddrs.Remember(addr)
	out, err := s.withFactor(r.Context(), s.sessionOutput(sess))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
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
	out, err := s.withFactor(r.Context(), s.sessionOutput(sess))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getSession(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	acct, err := s.accounts.Account(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	st, err := s.accounts.Status(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	factor, err := s.emailAuthFactor(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := map[string]any{
		"handle":          acct.Handle.String(),
		"did":             acct.DID.String(),
		"emailConfirmed":  !acct.EmailConfirmedAt.IsZero(),
		"emailAuthFactor": factor,
		"active":          st == account.StatusActive,
	}
	if st != account.StatusActive {
		out["status"] = string(st)
	}
	if acct.Email != "" && p.Can(auth.PermAccountEmail) {
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

// timeFormat is the atproto datetime format the reference answers with.
const timeFormat = "2006-01-02T15:04:05.000Z"
