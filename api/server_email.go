package api

import (
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

// limited consumes one request of method's budget for key and answers 429
// when it is spent.
func (e *emailAPI) limited(w http.ResponseWriter, r *http.Request, method, key string) bool {
	if e.email == nil {
		writeError(w, r, e.s.log, errNoEmailFlows)
		return true
	}
	var checks []limitCheck
	for _, l := range e.limits[method] {
		checks = append(checks, limitCheck{l, key})
	}
	if err := rateLimit(w, checks...); err != nil {
		writeError(w, r, e.s.log, err)
		return true
	}
	return false
}

// done answers an empty 200, as the reference does for these procedures.
func (e *emailAPI) done(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// requestEmailConfirmation: POST, no input.
func (e *emailAPI) requestEmailConfirmation(w http.ResponseWriter, r *http.Request) {
	if e.limited(w, r, "requestEmailConfirmation", accountKey) {
		return
	}
	e.done(w, r, e.email.RequestConfirmation(r.Context()))
}

type confirmEmailInput struct {
	Email string `json:"email"`
	Token string `json:"token"`
}

func (e *emailAPI) confirmEmail(w http.ResponseWriter, r *http.Request) {
	var in confirmEmailInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	if in.Email == "" || in.Token == "" {
		writeError(w, r, e.s.log, invalidRequest("email and token are required"))
		return
	}
	if e.limited(w, r, "confirmEmail", accountKey) {
		return
	}
	e.done(w, r, e.email.Confirm(r.Context(), in.Email, in.Token))
}

func (e *emailAPI) requestEmailUpdate(w http.ResponseWriter, r *http.Request) {
	if e.limited(w, r, "requestEmailUpdate", accountKey) {
		return
	}
	required, err := e.email.RequestUpdate(r.Context())
	if err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokenRequired": required})
}

type updateEmailInput struct {
	Email           string `json:"email"`
	EmailAuthFactor *bool  `json:"emailAuthFactor"`
	Token           string `json:"token"`
}

func (e *emailAPI) updateEmail(w http.ResponseWriter, r *http.Request) {
	var in updateEmailInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	if in.Email == "" {
		writeError(w, r, e.s.log, invalidRequest("email is required"))
		return
	}
	if e.limited(w, r, "updateEmail", accountKey) {
		return
	}
	e.done(w, r, e.email.Update(r.Context(), in.Email, in.Token, in.EmailAuthFactor))
}

type requestPasswordResetInput struct {
	Email string `json:"email"`
}

// requestPasswordReset needs no auth and answers 200 whether or not the
// address is the account's.
func (e *emailAPI) requestPasswordReset(w http.ResponseWriter, r *http.Request) {
	var in requestPasswordResetInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	if in.Email == "" {
		writeError(w, r, e.s.log, invalidRequest("email is required"))
		return
	}
	if e.limited(w, r, "requestPasswordReset", e.s.clientIP(r)) {
		return
	}
	e.done(w, r, e.email.RequestPasswordReset(r.Context(), in.Email))
}

type resetPasswordInput struct {
	Token    string `json:"token"`
	Password string `json:"password"`
}

func (e *emailAPI) resetPassword(w http.ResponseWriter, r *http.Request) {
	var in resetPasswordInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, e.s.log, err)
		return
	}
	if in.Token == "" || in.Password == "" {
		writeError(w, r, e.s.log, invalidRequest("token and password are required"))
		return
	}
	if e.limited(w, r, "resetPassword", e.s.clientIP(r)) {
		return
	}
	e.done(w, r, e.email.ResetPassword(r.Context(), in.Token, in.Password))
}

func (e *emailAPI) requestAccountDelete(w http.ResponseWriter, r *http.Request) {
	if e.limited(w, r, "requestAccountDelete", accountKey) {
		return
	}
	e.done(w, r, e.email.RequestAccountDelete(r.Context()))
}

func (e *emailAPI) requestPlcOperationSignature(w http.ResponseWriter, r *http.Request) {
	if e.limited(w, r, "requestPlcOperationSignature", accountKey) {
		return
	}
	e.done(w, r, e.email.RequestPLCOperationSignature(r.Context()))
}
