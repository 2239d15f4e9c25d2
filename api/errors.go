package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/mail"
	"github.com/pdsbox/pds/mst"
	"github.com/pdsbox/pds/repo"
)

// XRPCError is an error answered with the XRPC envelope
// {"error": Name, "message": Message} and an HTTP status.
type XRPCError struct {
	Status  int
	Name    string
	Message string
	// Err is the cause, logged for 5xx answers, never sent.
	Err error
}

func (e *XRPCError) Error() string { return e.Name + ": " + e.Message }
func (e *XRPCError) Unwrap() error { return e.Err }

func xerr(status int, name, format string, args ...any) *XRPCError {
	return &XRPCError{Status: status, Name: name, Message: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *XRPCError {
	return xerr(http.StatusBadRequest, "InvalidRequest", format, args...)
}

// errorTable maps domain errors to XRPC errors, in one place. The first
// match wins; the message is the error's own text unless Message is set.
var errorTable = []struct {
	err     error
	status  int
	name    string
	message string
}{
	{account.ErrAccountActive, 400, "InvalidRequest", ""},
	{account.ErrDIDNotReady, 400, "InvalidRequest", ""},
	{account.ErrDIDResolution, 400, "InvalidRequest", ""},
	{account.ErrWrongDID, 400, "InvalidRequest", ""},
	{account.ErrNoTokenStore, 501, "MethodNotImplemented", ""},
	{identity.ErrInvalidPLCOperation, 400, "InvalidRequest", ""},
	{auth.ErrEmailTokenExpired, 400, "ExpiredToken", "Token is expired"},
	{auth.ErrEmailTokenInvalid, 400, "InvalidToken", "Token is invalid"},
	{auth.ErrEmailTokenPurpose, 400, "InvalidRequest", ""},
	{repo.ErrInvalidCAR, 400, "InvalidRequest", ""},
	{repo.ErrWrongRepo, 400, "InvalidRequest", ""},
	{repo.ErrInvalidSwap, 400, "InvalidSwap", ""},
	{repo.ErrInvalidRecord, 400, "InvalidRequest", ""},
	{repo.ErrInvalidWrite, 400, "InvalidRequest", ""},
	{repo.ErrRecordExists, 400, "InvalidRequest", ""},
	{repo.ErrRecordNotFound, 400, "RecordNotFound", "Could not locate record"},
	{repo.ErrNoHead, 400, "RepoNotFound", "Could not find repo"},
	{repo.ErrExportBusy, 503, "TooBusy", "too many repository exports in progress; try again later"},
	{auth.ErrTokenRevoked, 400, "ExpiredToken", "Token has been revoked"},
	{auth.ErrExpiredToken, 400, "ExpiredToken", "Token has expired"},
	{auth.ErrInvalidToken, 400, "InvalidToken", "Token could not be verified"},
	{auth.ErrInvalidLogin, 401, "AuthenticationRequired", "Invalid identifier or password"},
	{auth.ErrAppPasswordExists, 400, "InvalidRequest", "an app password with this name already exists"},
	{auth.ErrAppPasswordNotFound, 400, "InvalidRequest", "no app password with this name"},
	{auth.ErrInvalidPassword, 400, "InvalidRequest", fmt.Sprintf("passwords must be 1 to %d characters", auth.MaxPasswordLength)},
	{auth.ErrInvalidAppPasswordName, 400, "InvalidRequest", ""},
	{auth.ErrRateLimited, 429, "RateLimitExceeded", "Rate Limit Exceeded"},
	{auth.ErrHashBusy, 429, "RateLimitExceeded", "Too many logins in progress; try again shortly"},
	{account.ErrAccountExists, 400, "InvalidRequest", ""},
	{account.ErrNoAccount, 400, "AccountNotFound", ""},
	{account.ErrInvalidInviteCode, 400, "InvalidInviteCode", "Provided invite code not available"},
	{account.ErrInvalidEmail, 400, "InvalidRequest", "invalid email address"},
	{identity.ErrUnsupportedDomain, 400, "UnsupportedDomain", ""},
	{identity.ErrInvalidHandle, 400, "InvalidHandle", ""},
	{account.ErrDIDCreation, 502, "UpstreamFailure", ""},
	{account.ErrHandleNotVerified, 400, "InvalidRequest", "External handle did not resolve to DID"},
	{account.ErrDIDUpdate, 502, "UpstreamFailure", ""},
	{blobstore.ErrTooLarge, 413, "PayloadTooLarge", "request entity too large"},
	{blobstore.ErrBlobNotFound, 400, "BlobNotFound", ""},
	{blobstore.ErrNotFound, 400, "BlobNotFound", "Blob not found"},
	{account.ErrEmailMismatch, 400, "InvalidRequest", "invalid email"},
	{account.ErrNoEmail, 400, "InvalidRequest", ""},
	{account.ErrEmailTokenRequired, 400, "TokenRequired", ""},
	{account.ErrEmailAuthFactorUnconfirmed, 400, "InvalidRequest", ""},
	{account.ErrAuthFactorTokenRequired, 401, "AuthFactorTokenRequired", "A sign-in code has been sent to your email address"},
	{account.ErrMailNotConfigured, 400, "InvalidRequest", ""},
	{mail.ErrInvalidAddress, 400, "InvalidRequest", ""},
	{mail.ErrInvalidMessage, 400, "InvalidRequest", ""},
	{account.ErrInvalidSubject, 400, "InvalidRequest", ""},
	{account.ErrInvalidPreferences, 400, "InvalidRequest", ""},
	{account.ErrAccountDeactivated, 400, "AccountDeactivated", "Account is deactivated"},
	{account.ErrAccountTakendown, 401, "AccountTakedown", "Account has been taken down"},
	{account.ErrAccountDeleted, 400, "AccountNotFound", "Account has been deleted"},
	{account.ErrInvalidTransition, 400, "InvalidRequest", ""},
	{auth.ErrServiceAuth, 401, "AuthRequired", ""},
	{auth.ErrOtherCredential, 400, "InvalidToken", "Unexpected authorization type"},
	{identity.ErrHandleNotFound, 400, "InvalidRequest", "Unable to resolve handle"},
	{identity.ErrServiceNotFound, 400, "InvalidRequest", "could not resolve proxy did service url"},
	{identity.ErrForbiddenTarget, 400, "InvalidRequest", ""},
	{identity.ErrInvalidHostname, 400, "InvalidRequest", ""},
	{identity.ErrInvalidEndpoint, 400, "InvalidRequest", ""},
	{identity.ErrInvalidDID, 400, "InvalidRequest", ""},
	{identity.ErrDIDNotFound, 400, "DidNotFound", "DID not found"},
	{identity.ErrPLC, 502, "UpstreamFailure", ""},
	{events.ErrFutureCursor, 400, "FutureCursor", "Cursor in the future."},
	{events.ErrConsumerTooSlow, 400, "ConsumerTooSlow", "Stream consumer too slow"},
	{events.ErrClosed, 503, "NotEnoughResources", "server shutting down"},
	{mst.ErrInvalidKey, 400, "InvalidRequest", ""},
	{context.DeadlineExceeded, 503, "InternalServerError", "request timed out"},
}

// asXRPC turns any error into the XRPC error answered for it.
func asXRPC(err error) *XRPCError {
	var xe *XRPCError
	if errors.As(err, &xe) {
		return xe
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &XRPCError{Status: 413, Name: "PayloadTooLarge", Message: "request entity too large", Err: err}
	}
	for _, m := range errorTable {
		if errors.Is(err, m.err) {
			msg := m.message
			if msg == "" {
				msg = err.Error()
			}
			return &XRPCError{Status: m.status, Name: m.name, Message: msg, Err: err}
		}
	}
	return &XRPCError{Status: 500, Name: "InternalServerError", Message: "Internal Server Error", Err: err}
}

// writeError answers err as an XRPC error. Server errors are logged with
// their cause; client errors are not (they are in the request log).
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	xe := oauthErrorHeaders(w, err)
	if xe == nil {
		xe = asXRPC(err)
	}
	if xe.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.URL.Path, "status", xe.Status, "err", err)
	}
	body := map[string]string{"error": xe.Name, "message": xe.Message}
	if xe.Status == http.StatusRequestEntityTooLarge {
		answerTooLarge(w, r, xe.Status, body)
		return
	}
	writeJSON(w, xe.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
