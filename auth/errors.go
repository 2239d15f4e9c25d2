package auth

import (
	"errors"
	"fmt"
)

// Errors returned by the auth package. The api package maps each to one XRPC
// error; wrapped errors carry the detail for logs, never a secret.
var (
	// ErrInvalidLogin: a wrong identifier or password. It is the one error
	// for both, so that a caller cannot tell which was wrong.
	ErrInvalidLogin = errors.New("invalid identifier or password")
	// ErrExpiredToken: a correctly signed token whose exp has passed (XRPC
	// 400 ExpiredToken, on which clients refresh).
	ErrExpiredToken = errors.New("token has expired")
	// ErrInvalidToken: anything else wrong with a token: malformed, bad
	// signature, an algorithm other than HS256, wrong typ, audience, subject
	// or scope for the use, or revoked (XRPC 400 InvalidToken).
	ErrInvalidToken = errors.New("invalid token")
	// ErrInvalidAppPasswordName: an app password name that is empty after
	// trimming or longer than MaxAppPasswordNameLength.
	ErrInvalidAppPasswordName = errors.New("invalid app password name")
	// ErrAppPasswordExists: CreateAppPassword with a name already in use.
	ErrAppPasswordExists = errors.New("app password name already in use")
	// ErrAppPasswordNotFound: RevokeAppPassword of an unknown name.
	ErrAppPasswordNotFound = errors.New("app password not found")
	// ErrRateLimited: a RateLimiter refused the request (Allow reported
	// ok=false). RateLimiter itself reports a bool; callers return this error
	// so that the api maps it to 429 RateLimitExceeded.
	ErrRateLimited = errors.New("rate limit exceeded")
	// ErrInvalidPassword: a new account password that is empty or longer
	// than MaxPasswordLength.
	ErrInvalidPassword = errors.New("invalid password")
)

// ErrTokenRevoked: a refresh token that was revoked, rotated past its grace
// period, or outlived its app password. Like the reference, it is reported
// as an expired token, so clients sign out instead of retrying.
var ErrTokenRevoked = fmt.Errorf("%w: token has been revoked", ErrExpiredToken)
