package identity

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/did-method-plc/go-didplc"
)

// ErrInvalidPLCOperation: a PLC operation that a client asked us to sign or
// submit breaks the rules (XRPC InvalidRequest). The wrapped message says
// which.
var ErrInvalidPLCOperation = errors.New("invalid PLC operation")

// Bounds on the fields of a PLC operation a client sends, as the PLC
// directory sets them (at most 5 rotation keys, small documents).
const (
	maxPLCRotationKeys = 5
	maxPLCFieldCount   = 10
	maxPLCFieldLen     = 512
)

// PLCChanges are the fields of com.atproto.identity.signPlcOperation: each
// non-nil field replaces the one of the last operation.
type PLCChanges struct {
	RotationKeys        []string
	AlsoKnownAs         []string
	VerificationMethods map[string]string
	Services            map[string]didplc.OpService
}

// PLCUpdate returns an operation that follows last, with changes applied,
// signed with rotationKey (which must be one of last's rotation keys for the
// directory to accept it). This is signPlcOperation: the old server signs
// the operation that moves the account to its new server.
func PLCUpdate(last *didplc.RegularOp, rotationKey atcrypto.PrivateKey, ch PLCChanges) (*didplc.RegularOp, error) {
	if last == nil || rotationKey == nil {
		return nil, fmt.Errorf("identity: PLC update needs the last operation and a rotation key")
	}
	prev := last.CID().String()
	op := &didplc.RegularOp{
		Type:                "plc_operation",
		RotationKeys:        slices.Clone(last.RotationKeys),
		VerificationMethods: maps.Clone(last.VerificationMethods),
		AlsoKnownAs:         slices.Clone(last.AlsoKnownAs),
		Services:            maps.Clone(last.Services),
		Prev:                &prev,
	}
	if ch.RotationKeys != nil {
		op.RotationKeys = slices.Clone(ch.RotationKeys)
	}
	if ch.AlsoKnownAs != nil {
		op.AlsoKnownAs = slices.Clone(ch.AlsoKnownAs)
	}
	if ch.VerificationMethods != nil {
		op.VerificationMethods = maps.Clone(ch.VerificationMethods)
	}
	if ch.Services != nil {
		op.Services = maps.Clone(ch.Services)
	}
	if op.VerificationMethods == nil {
		op.VerificationMethods = map[string]string{}
	}
	if op.Services == nil {
		op.Services = map[string]didplc.OpService{}
	}
	if op.AlsoKnownAs == nil {
		op.AlsoKnownAs = []string{}
	}
	if err := checkOpShape(op); err != nil {
		return nil, err
	}
	if err := op.Sign(rotationKey); err != nil {
		return nil, fmt.Errorf("identity: signing PLC operation: %w", err)
	}
	return op, nil
}

// checkOpShape bounds the fields and checks that every key is a did:key.
func checkOpShape(op *didplc.RegularOp) error {
	if len(op.RotationKeys) == 0 || len(op.RotationKeys) > maxPLCRotationKeys {
		return fmt.Errorf("%w: %d rotation keys (1 to %d)", ErrInvalidPLCOperation, len(op.RotationKeys), maxPLCRotationKeys)
	}
	for _, k := range op.RotationKeys {
		if _, err := atcrypto.ParsePublicDIDKey(k); err != nil {
			return fmt.Errorf("%w: rotation key %.80q: %v", ErrInvalidPLCOperation, k, err)
		}
	}
	if len(op.VerificationMethods) > maxPLCFieldCount || len(op.Services) > maxPLCFieldCount || len(op.AlsoKnownAs) > maxPLCFieldCount {
		return fmt.Errorf("%w: too many verification methods, services or aliases", ErrInvalidPLCOperation)
	}
	for k, v := range op.VerificationMethods {
		if len(k) > maxPLCFieldLen {
			return fmt.Errorf("%w: verification method name too long", ErrInvalidPLCOperation)
		}
		if _, err := atcrypto.ParsePublicDIDKey(v); err != nil {
			return fmt.Errorf("%w: verification method %.80q: %v", ErrInvalidPLCOperation, k, err)
		}
	}
	for k, s := range op.Services {
		if len(k) > maxPLCFieldLen || len(s.Type) > maxPLCFieldLen || len(s.Endpoint) > maxPLCFieldLen {
			return fmt.Errorf("%w: service %.80q too long", ErrInvalidPLCOperation, k)
		}
	}
	for _, a := range op.AlsoKnownAs {
		if len(a) > maxPLCFieldLen {
			return fmt.Errorf("%w: alias too long", ErrInvalidPLCOperation)
		}
	}
	return nil
}

// PLCExpect is what an operation submitted for an account hosted here must
// keep: this server as its PDS, our signing key, our rotation key, and the
// account's handle.
type PLCExpect struct {
	// RotationKey is the did:key of this server's PLC rotation key.
	RotationKey string
	// SigningKey is the did:key of the account's repo signing key here.
	SigningKey string
	// Endpoint is this server's public URL.
	Endpoint string
	// Handle is the account's handle (without at://).
	Handle string
}

// CheckPLCSubmission checks an operation a client submits through
// com.atproto.identity.submitPlcOperation, as the reference PDS does: a
// signed plc_operation with a prev, whose rotation keys include ours, whose
// atproto_pds service is this server, whose atproto verification method is
// our signing key, and whose first alias is the account's handle. The
// signature itself and prev are checked by the directory.
func CheckPLCSubmission(op *didplc.RegularOp, want PLCExpect) error {
	if op == nil || op.Type != "plc_operation" {
		return fmt.Errorf("%w: not a plc_operation", ErrInvalidPLCOperation)
	}
	if !op.IsSigned() {
		return fmt.Errorf("%w: the operation is not signed", ErrInvalidPLCOperation)
	}
	if op.Prev == nil || *op.Prev == "" {
		return fmt.Errorf("%w: the operation has no prev (a genesis operation cannot move an account)", ErrInvalidPLCOperation)
	}
	if err := checkOpShape(op); err != nil {
		return err
	}
	if want.RotationKey != "" && !slices.Contains(op.RotationKeys, want.RotationKey) {
		return fmt.Errorf("%w: rotation keys do not include this server's rotation key", ErrInvalidPLCOperation)
	}
	pds, ok := op.Services["atproto_pds"]
	if !ok {
		return fmt.Errorf("%w: no atproto_pds service", ErrInvalidPLCOperation)
	}
	if pds.Type != "AtprotoPersonalDataServer" {
		return fmt.Errorf("%w: incorrect type on atproto_pds service: %.80q", ErrInvalidPLCOperation, pds.Type)
	}
	if strings.TrimSuffix(pds.Endpoint, "/") != strings.TrimSuffix(want.Endpoint, "/") {
		return fmt.Errorf("%w: incorrect endpoint on atproto_pds service: %.200q, not %q", ErrInvalidPLCOperation, pds.Endpoint, want.Endpoint)
	}
	if op.VerificationMethods["atproto"] != want.SigningKey {
		return fmt.Errorf("%w: incorrect signing key: the atproto verification method must be %s", ErrInvalidPLCOperation, want.SigningKey)
	}
	if len(op.AlsoKnownAs) == 0 || op.AlsoKnownAs[0] != "at://"+want.Handle {
		return fmt.Errorf("%w: incorrect handle in alsoKnownAs: the first alias must be at://%s", ErrInvalidPLCOperation, want.Handle)
	}
	return nil
}
