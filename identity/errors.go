package identity

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors returned by the identity package. The api package maps each to one
// XRPC error; wrapped errors carry the detail for the message.
var (
	// ErrInvalidHandle: a handle that is syntactically invalid, uses a
	// disallowed TLD, or breaks the service-domain rules (one label of 3 to
	// 18 characters below the domain). XRPC InvalidHandle.
	ErrInvalidHandle = errors.New("invalid handle")
	// ErrUnsupportedDomain: a handle outside this server's hostname and
	// service handle domains. XRPC UnsupportedDomain.
	ErrUnsupportedDomain = errors.New("unsupported handle domain")
	// ErrInvalidHostname: a hostname that cannot name a did:web (a port, a
	// path, or characters outside a DNS name).
	ErrInvalidHostname = errors.New("invalid hostname")
	// ErrInvalidEndpoint: a PDS endpoint that is not an absolute http(s) URL.
	ErrInvalidEndpoint = errors.New("invalid service endpoint")
	// ErrInvalidDID: a DID of the wrong method for the operation, or a PLC
	// operation that is unsigned or not a genesis operation where one is
	// needed.
	ErrInvalidDID = errors.New("invalid DID")
	// ErrPLC: the PLC directory could not be reached or answered with an
	// error. Errors from PLCClient wrap it; a *PLCError carries the HTTP
	// status and the directory's message.
	ErrPLC = errors.New("PLC directory request failed")
	// ErrDIDNotFound: the PLC directory does not know the DID (404) or it
	// has been tombstoned (410). It also matches ErrPLC.
	ErrDIDNotFound = errors.New("DID not found")
)

// PLCError is a non-2xx answer from the PLC directory. It matches ErrPLC
// with errors.Is, and also ErrDIDNotFound for a 404 or 410 answer.
type PLCError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Message is the directory's error message: the "message" field of a
	// JSON body, else the (truncated) body text, else the status text.
	Message string
}

// Error implements error.
func (e *PLCError) Error() string {
	return fmt.Sprintf("PLC directory answered %d: %s", e.StatusCode, e.Message)
}

// Is makes a PLCError match ErrPLC, and ErrDIDNotFound for 404 and 410.
func (e *PLCError) Is(target error) bool {
	switch target {
	case ErrPLC:
		return true
	case ErrDIDNotFound:
		return e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusGone
	}
	return false
}
