package api

import (
	"context"

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

// sessionOutput is the answer of createSession, refreshSession and (without
// the tokens) getSession.
type sessionOutput struct {
	AccessJWT       string `json:"accessJwt,omitempty"`
	RefreshJWT      string `json:"refreshJwt,omitempty"`
	Handle          string `json:"handle"`
	DID             string `json:"did"`
	Email           string `json:"email,omitempty"`
	EmailConfirmed  bool   `json:"emailConfirmed"`
	EmailAuthFactor bool   `json:"emailAuthFactor"`
	Active          bool   `json:"active"`
	Status          string `json:"status,omitempty"`
}

func newSessionOutput(sess *auth.Session) *sessionOutput {
	return &sessionOutput{
		AccessJWT: sess.AccessJWT, RefreshJWT: sess.RefreshJWT,
		Handle: sess.Handle.String(), DID: sess.DID.String(), Email: sess.Email,
		EmailConfirmed: sess.EmailConfirmed, Active: true,
	}
}

// withFactor sets out's emailAuthFactor.
func (s *server) withFactor(ctx context.Context, out *sessionOutput) (*sessionOutput, error) {
	factor, err := s.emailAuthFactor(ctx)
	if err != nil {
		return nil, err
	}
	out.EmailAuthFactor = factor
	return out, nil
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

func (s *server) createSession(ctx context.Context, in *createSessionInput) (*sessionOutput, error) {
	if in.Identifier == "" || in.Password == "" {
		return nil, invalidRequest("identifier and password are required")
	}
	// Per address always; per identifier (all spellings of the account
	// share one budget) unless the address is one the owner recently used,
	// so guesses against the owner's handle cannot lock the owner out.
	addr := s.addrKey(requestOf(ctx))
	known := s.knownAddrs.Known(addr)
	checks := []limitCheck{{s.loginIP, addr}}
	if !known {
		checks = append(checks, limitCheck{s.loginID, s.auth.LoginKey(in.Identifier)})
	}
	if err := rateLimit(responseHeader(ctx), checks...); err != nil {
		return nil, err
	}
	sess, err := s.login(auth.WithPriorityIf(ctx, known), in)
	if err != nil {
		return nil, err
	}
	// As the reference: the right password of a taken-down account
	// answers AccountTakedown, and no session is handed out.
	if err := s.accounts.CheckStatus(ctx, account.ActionAuthenticate); err != nil {
		_ = s.auth.RevokeSession(ctx, sess.RefreshJWT)
		return nil, err
	}
	s.knownAddrs.Remember(addr)
	return s.withFactor(ctx, newSessionOutput(sess))
}

// refreshSession takes no input: the refresh token is the credential.
func (s *server) refreshSession(ctx context.Context) (*sessionOutput, error) {
	tok, ok := bearer(requestOf(ctx))
	if !ok {
		return nil, errAuthMissing
	}
	sess, err := s.auth.Refresh(ctx, tok)
	if err != nil {
		return nil, err
	}
	return s.withFactor(ctx, newSessionOutput(sess))
}

func (s *server) getSession(ctx context.Context, _ *noParams) (*sessionOutput, error) {
	acct, err := s.accounts.Account(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.accounts.Status(ctx)
	if err != nil {
		return nil, err
	}
	factor, err := s.emailAuthFactor(ctx)
	if err != nil {
		return nil, err
	}
	out := &sessionOutput{
		EmailAuthFactor: factor,
		Handle:          acct.Handle.String(),
		DID:             acct.DID.String(),
		EmailConfirmed:  !acct.EmailConfirmedAt.IsZero(),
		Active:          st == account.StatusActive,
	}
	if st != account.StatusActive {
		out.Status = string(st)
	}
	if principalFrom(ctx).Can(auth.PermAccountEmail) {
		out.Email = acct.Email
	}
	return out, nil
}

func (s *server) deleteSession(ctx context.Context) (*noOutput, error) {
	tok, ok := bearer(requestOf(ctx))
	if !ok {
		return nil, errAuthMissing
	}
	return nil, s.auth.RevokeSession(ctx, tok)
}

type appPasswordInput struct {
	Name       string `json:"name"`
	Privileged bool   `json:"privileged"`
}

// timeFormat is the atproto datetime format the reference answers with.
const timeFormat = "2006-01-02T15:04:05.000Z"
