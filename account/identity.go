package account

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/identity"
	bolt "go.etcd.io/bbolt"
)

// ErrHandleNotVerified: a handle outside this server's domains does not
// resolve (DNS TXT or https well-known) to the account's DID.
var ErrHandleNotVerified = errors.New("handle does not resolve to this account's DID")

// UpdateHandle changes the account's handle. A handle that is the hostname
// or under one of the server's domains is served by us; any other must
// already resolve to the account's DID. For did:plc the directory is updated
// with a signed operation first; then the handle and its #identity event are
// stored in one transaction. Repeating the current handle re-announces it,
// which is how a stale handle is repaired downstream.
func (s *Service) UpdateHandle(ctx context.Context, raw string) (syntax.Handle, error) {
	h, err := syntax.ParseHandle(strings.ToLower(strings.TrimSpace(raw)))
	if err != nil {
		return "", fmt.Errorf("%w: %v", identity.ErrInvalidHandle, err)
	}
	h = h.Normalize()
	if !h.AllowedTLD() {
		return "", fmt.Errorf("%w: top-level domain not allowed", identity.ErrInvalidHandle)
	}
	acct, err := s.Account(ctx)
	if err != nil {
		return "", err
	}
	if err := identity.HandleAllowed(h, s.cfg.Hostname, s.cfg.ServiceDomains); err != nil {
		// A malformed name under our domains is refused as such; only a
		// name outside them needs to prove it points here.
		if !errors.Is(err, identity.ErrUnsupportedDomain) {
			return "", err
		}
		if s.cfg.Resolver == nil {
			return "", fmt.Errorf("%w: no resolver configured", ErrHandleNotVerified)
		}
		did, err := s.cfg.Resolver.ResolveHandle(ctx, h)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrHandleNotVerified, err)
		}
		if did != acct.DID {
			return "", fmt.Errorf("%w: %s points to %s", ErrHandleNotVerified, h, did)
		}
	}
	if acct.DID.Method() == "plc" {
		if s.cfg.PLC == nil || s.cfg.RotationKey == nil {
			return "", fmt.Errorf("%w: no PLC directory or rotation key", ErrDIDCreation)
		}
		last, err := s.cfg.PLC.LastOp(ctx, acct.DID)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrDIDUpdate, err)
		}
		// The document may already name the handle (a repeated update):
		// then only the #identity event is sent again, as the reference does.
		if len(last.AlsoKnownAs) == 0 || last.AlsoKnownAs[0] != "at://"+h.String() {
			op, err := identity.PLCUpdateHandle(last, s.cfg.RotationKey, h)
			if err != nil {
				return "", err
			}
			if err := s.cfg.PLC.Submit(ctx, acct.DID, op); err != nil {
				return "", fmt.Errorf("%w: %w", ErrDIDUpdate, err)
			}
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		// A deactivated account may still fix its handle (the reference
		// checks only takedown here); a taken-down one may not.
		if err := statusTx(tx).Allows(ActionAuthenticate); err != nil {
			return err
		}
		a, err := getAccount(tx)
		if err != nil {
			return err
		}
		a.Handle = h
		if err := putAccount(tx, a); err != nil {
			return err
		}
		if s.cfg.Events != nil {
			_, err := s.cfg.Events.AppendIdentity(tx, acct.DID, h.String())
			return err
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	s.cfg.Log.Info("handle updated", "did", acct.DID, "handle", h)
	return h, nil
}

// ErrDIDUpdate: the PLC directory refused or could not be reached.
var ErrDIDUpdate = errors.New("could not update the DID document")
