package account

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Status is the account's hosting status, as com.atproto.sync.getRepoStatus
// and #account events name it ("" on the wire when active).
type Status string

// The statuses of an account.
const (
	StatusActive      Status = "active"
	StatusDeactivated Status = "deactivated" // by its owner (deactivateAccount, migration)
	StatusTakendown   Status = "takendown"   // by the operator
	StatusDeleted     Status = "deleted"     // deleteAccount: nothing may follow
)

// Errors of the status rules; the api maps them to XRPC errors.
var (
	// ErrAccountDeactivated: a write to a deactivated account (XRPC 400
	// AccountDeactivated, as the reference answers).
	ErrAccountDeactivated = errors.New("account is deactivated")
	// ErrAccountTakendown: any authenticated call of a taken-down account
	// (XRPC 401 AccountTakedown).
	ErrAccountTakendown = errors.New("account has been taken down")
	// ErrAccountDeleted: the account was deleted.
	ErrAccountDeleted = errors.New("account has been deleted")
	// ErrInvalidTransition: a status change the rules do not allow (for
	// instance activating a taken-down account as its owner).
	ErrInvalidTransition = errors.New("invalid account status transition")
)

// Action is what a caller wants to do with the account, for CheckStatus.
type Action int

// The actions the status rules distinguish.
const (
	// ActionAuthenticate: use a session or sign in. Refused while taken
	// down or deleted; a deactivated account may sign in (to reactivate or
	// migrate), as in the reference PDS.
	ActionAuthenticate Action = iota
	// ActionWrite: commit to the repository, change the handle or
	// preferences. Only an active account writes.
	ActionWrite
	// ActionImport: importRepo and blob uploads of a migration, which the
	// reference allows into a deactivated account.
	ActionImport
)

// Allows reports the error the status rules give for action, or nil.
func (st Status) Allows(a Action) error {
	switch st {
	case StatusActive, "":
		return nil
	case StatusDeactivated:
		if a == ActionWrite {
			return ErrAccountDeactivated
		}
		return nil
	case StatusTakendown:
		return ErrAccountTakendown
	default:
		return ErrAccountDeleted
	}
}

// keyStatus holds the account's Status in bucketServer; absent means active.
var keyStatus = []byte("account_status")

// statusTx reads the status inside tx.
func statusTx(tx *bolt.Tx) Status {
	v := tx.Bucket(bucketServer).Get(keyStatus)
	if v == nil {
		return StatusActive
	}
	return Status(v)
}

// Status returns the account's status (StatusActive for a server without
// an account).
func (s *Service) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	st := StatusActive
	err := s.db.View(func(tx *bolt.Tx) error {
		st = statusTx(tx)
		return nil
	})
	return st, err
}

// CheckStatus returns the status rule's error for action, or nil.
func (s *Service) CheckStatus(ctx context.Context, a Action) error {
	st, err := s.Status(ctx)
	if err != nil {
		return err
	}
	return st.Allows(a)
}

// transitions lists, for each target status, the statuses it may follow.
var transitions = map[Status][]Status{
	StatusActive:      {StatusDeactivated}, // the owner cannot lift a takedown
	StatusDeactivated: {StatusActive},
	StatusTakendown:   {StatusActive, StatusDeactivated},
	StatusDeleted:     {StatusActive, StatusDeactivated, StatusTakendown},
}

// Deactivate marks the account deactivated by its owner: writes are
// refused until Activate.
func (s *Service) Deactivate(ctx context.Context) error {
	return s.setStatus(ctx, StatusDeactivated)
}

// Activate returns a deactivated account to active.
func (s *Service) Activate(ctx context.Context) error {
	return s.setStatus(ctx, StatusActive)
}

// Takedown marks the account taken down by the operator.
func (s *Service) Takedown(ctx context.Context) error {
	return s.setStatus(ctx, StatusTakendown)
}

// ReverseTakedown returns a taken-down account to active (the operator's
// call; its owner's Activate cannot).
func (s *Service) ReverseTakedown(ctx context.Context) error {
	return s.setStatus(ctx, StatusActive, StatusTakendown)
}

// MarkDeleted records that the account is deleted; deleting its data is
// the caller's job.
func (s *Service) MarkDeleted(ctx context.Context) error {
	return s.setStatus(ctx, StatusDeleted)
}

// setStatus changes the status in one transaction with its #account event,
// so that consumers see every change exactly when it commits. from, when
// given, narrows the statuses the change may follow.
func (s *Service) setStatus(ctx context.Context, to Status, from ...Status) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rp, err := s.Repo()
	if err != nil {
		return err
	}
	allowed := transitions[to]
	if len(from) > 0 {
		allowed = from
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		cur := statusTx(tx)
		if cur == to {
			return nil
		}
		ok := false
		for _, f := range allowed {
			ok = ok || f == cur
		}
		if !ok {
			return fmt.Errorf("%w: %s to %s", ErrInvalidTransition, cur, to)
		}
		if err := tx.Bucket(bucketServer).Put(keyStatus, []byte(to)); err != nil {
			return err
		}
		if s.cfg.Events == nil {
			return nil
		}
		wire := string(to)
		if to == StatusActive {
			wire = ""
		}
		_, err := s.cfg.Events.AppendAccount(tx, rp.DID(), to == StatusActive, wire)
		return err
	})
}
