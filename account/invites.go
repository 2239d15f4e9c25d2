package account

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// This server hosts one account, so it has at most one invite code (the
// one account creation takes while no account exists). The admin invite
// methods act on that code; the single-account rule holds whatever they do.

var (
	keyInviteCreated  = []byte("invite_code_created_at")
	keyInvitesOff     = []byte("invites_disabled")
	keyInvitesOffNote = []byte("invites_disabled_note")
)

// InviteInfo describes the server's invite code.
type InviteInfo struct {
	Code      string
	CreatedAt time.Time
	// Disabled: disableInviteCodes retired it (a new one replaces it on the
	// next createInviteCode).
	Disabled bool
}

// InviteCodeInfo returns the server's invite code, making one if there is
// none, with when it was made.
func (s *Service) InviteCodeInfo() (*InviteInfo, error) {
	code, err := s.InviteCode()
	if err != nil {
		return nil, err
	}
	info := &InviteInfo{Code: code}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		if v := b.Get(keyInviteCreated); v != nil {
			return info.CreatedAt.UnmarshalText(v)
		}
		info.CreatedAt = time.Now().UTC().Truncate(time.Second)
		v, _ := info.CreatedAt.MarshalText()
		return b.Put(keyInviteCreated, v)
	})
	return info, err
}

// DisableInviteCode retires code if it is the server's: account creation
// no longer takes it. It reports whether it was.
func (s *Service) DisableInviteCode(code string) (bool, error) {
	if err := s.CheckInviteCode(code); err != nil {
		return false, nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		if err := b.Delete(keyInvite); err != nil {
			return err
		}
		return b.Delete(keyInviteCreated)
	})
	return err == nil, err
}

// SetInvitesDisabled records disableAccountInvites / enableAccountInvites
// for the account (reported by getAccountInfo; the account cannot make
// invite codes here either way).
func (s *Service) SetInvitesDisabled(disabled bool, note string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		if !disabled {
			if err := b.Delete(keyInvitesOffNote); err != nil {
				return err
			}
			return b.Delete(keyInvitesOff)
		}
		if err := b.Put(keyInvitesOffNote, []byte(note)); err != nil {
			return err
		}
		return b.Put(keyInvitesOff, []byte{1})
	})
}

// InvitesDisabled reports the flag SetInvitesDisabled sets, and its note.
func (s *Service) InvitesDisabled() (disabled bool, note string) {
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		disabled = b.Get(keyInvitesOff) != nil
		note = string(b.Get(keyInvitesOffNote))
		return nil
	})
	return disabled, note
}
