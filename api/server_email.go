package api

import (
	"context"
	"net/http"
	"time"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

// emailAPI serves the com.atproto.server methods that prove it is the
// account holder by a code mailed to the account (account.Email), with the
// reference PDS's rate limits: each method has its own budget, per account
// (this server has one) or, for the unauthenticated ones, per client IP.
type emailAPI struct {
	s      *server
	email  *account.Email
	limits map[string][]*auth.RateLimiter // method → its limiters
}

func newEmailAPI(s *server, email *account.Email) *emailAPI {
	hour, day := time.Hour, 24*time.Hour
	l := auth.NewRateLimiter
	fiveAndFifteen := func() []*auth.RateLimiter { return []*auth.RateLimiter{l(5, hour, nil), l(15, day, nil)} }
	return &emailAPI{s: s, email: email, limits: map[string][]*auth.RateLimiter{
		"requestEmailConfirmation":     fiveAndFifteen(),
		"confirmEmail":                 fiveAndFifteen(),
		"requestEmailUpdate":           fiveAndFifteen(),
		"updateEmail":                  fiveAndFifteen(),
		"requestAccountDelete":         fiveAndFifteen(),
		"requestPlcOperationSignature": fiveAndFifteen(),
		"requestPasswordReset":         {l(15, hour, nil), l(50, day, nil)},
		"resetPassword":                {l(50, 5*time.Minute, nil)},
	}}
}

// errNoEmailFlows answers the email methods of a router built without
// Deps.Email.
var errNoEmailFlows = xerr(http.StatusNotImplemented, "MethodNotImplemented", "email flows are not configured on this server")

// accountKey keys the per-account limits: there is one account.
const accountKey = "account"

// limit consumes one request of method's budget for key: 429 when it is
// spent, 501 on a server without email flows.
func (e *emailAPI) limit(ctx context.Context, method, key string) error {
	if e.email == nil {
		return errNoEmailFlows
	}
	var checks []limitCheck
	for _, l := range e.limits[method] {
		checks = append(checks, limitCheck{l, key})
	}
	return rateLimit(responseHeader(ctx), checks...)
}

// requestEmailConfirmation: POST, no input.
func (e *emailAPI) requestEmailConfirmation(ctx context.Context) (*noOutput, error) {
	if err := e.limit(ctx, "requestEmailConfirmation", accountKey); err != nil {
		return nil, err
	}
	return nil, e.email.RequestConfirmation(ctx)
}

type confirmEmailInput struct {
	Email string `json:"email"`
	Token string `json:"token"`
}

func (e *emailAPI) confirmEmail(ctx context.Context, in *confirmEmailInput) (*noOutput, error) {
	if in.Email == "" || in.Token == "" {
		return nil, invalidRequest("email and token are required")
	}
	if err := e.limit(ctx, "confirmEmail", accountKey); err != nil {
		return nil, err
	}
	return nil, e.email.Confirm(ctx, in.Email, in.Token)
}

type requestEmailUpdateOutput struct {
	TokenRequired bool `json:"tokenRequired"`
}

func (e *emailAPI) requestEmailUpdate(ctx context.Context) (*requestEmailUpdateOutput, error) {
	if err := e.limit(ctx, "requestEmailUpdate", accountKey); err != nil {
		return nil, err
	}
	required, err := e.email.RequestUpdate(ctx)
	if err != nil {
		return nil, err
	}
	return &requestEmailUpdateOutput{TokenRequired: required}, nil
}

type updateEmailInput struct {
	Email           string `json:"email"`
	EmailAuthFactor *bool  `json:"emailAuthFactor"`
	Token           string `json:"token"`
}

func (e *emailAPI) updateEmail(ctx context.Context, in *updateEmailInput) (*noOutput, error) {
	if in.Email == "" {
		return nil, invalidRequest("email is required")
	}
	if err := e.limit(ctx, "updateEmail", accountKey); err != nil {
		return nil, err
	}
	return nil, e.email.Update(ctx, in.Email, in.Token, in.EmailAuthFactor)
}

type requestPasswordResetInput struct {
	Email string `json:"email"`
}

// requestPasswordReset needs no auth and answers 200 whether or not the
// address is the account's.
func (e *emailAPI) requestPasswordReset(ctx context.Context, in *requestPasswordResetInput) (*noOutput, error) {
	if in.Email == "" {
		return nil, invalidRequest("email is required")
	}
	if err := e.limit(ctx, "requestPasswordReset", e.s.clientIP(requestOf(ctx))); err != nil {
		return nil, err
	}
	return nil, e.email.RequestPasswordReset(ctx, in.Email)
}

type resetPasswordInput struct {
	Token    string `json:"token"`
	Password string `json:"password"`
}

func (e *emailAPI) resetPassword(ctx context.Context, in *resetPasswordInput) (*noOutput, error) {
	if in.Token == "" || in.Password == "" {
		return nil, invalidRequest("token and password are required")
	}
	if err := e.limit(ctx, "resetPassword", e.s.clientIP(requestOf(ctx))); err != nil {
		return nil, err
	}
	return nil, e.email.ResetPassword(ctx, in.Token, in.Password)
}

func (e *emailAPI) requestAccountDelete(ctx context.Context) (*noOutput, error) {
	if err := e.limit(ctx, "requestAccountDelete", accountKey); err != nil {
		return nil, err
	}
	return nil, e.email.RequestAccountDelete(ctx)
}

func (e *emailAPI) requestPlcOperationSignature(ctx context.Context) (*noOutput, error) {
	if err := e.limit(ctx, "requestPlcOperationSignature", accountKey); err != nil {
		return nil, err
	}
	return nil, e.email.RequestPLCOperationSignature(ctx)
}
