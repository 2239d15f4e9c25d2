package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// MaxAppPasswordNameLength bounds an app password name (in characters,
// after trimming). The reference PDS sets no limit; the Bluesky app asks for
// at most 32; this server took 100 (the api's former limit) as its one rule.
const MaxAppPasswordNameLength = 100

// AppPassword is an app password as createAppPassword and listAppPasswords
// report it.
type AppPassword struct {
	Name string
	// Password is the secret; set only in the result of CreateAppPassword,
	// it is not stored and cannot be read again.
	Password   string
	Privileged bool
	CreatedAt  time.Time
}

// appPasswordRecord is a stored app password, keyed by its name.
type appPasswordRecord struct {
	// ID is random and new for every app password: access tokens carry it
	// (claim apid), so that revoking the app password revokes them.
	ID         string    `json:"id"`
	Hash       string    `json:"hash"`
	Privileged bool      `json:"privileged,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
}

func (r *appPasswordRecord) scope() Scope {
	if r.Privileged {
		return ScopeAppPassPrivileged
	}
	return ScopeAppPass
}

func getAppPassword(tx *bolt.Tx, name string) (*appPasswordRecord, error) {
	v := tx.Bucket(bucketAppPasswords).Get([]byte(name))
	if v == nil {
		return nil, nil
	}
	var r appPasswordRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decoding app password: %w", err)
	}
	return &r, nil
}

// appPasswords returns all app passwords by name.
func appPasswords(tx *bolt.Tx) (map[string]*appPasswordRecord, error) {
	out := map[string]*appPasswordRecord{}
	err := tx.Bucket(bucketAppPasswords).ForEach(func(k, v []byte) error {
		var r appPasswordRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decoding app password: %w", err)
		}
		out[string(k)] = &r
		return nil
	})
	return out, err
}

// appPasswordByID finds the app password with id; nil if there is none. A
// scan: one account has few app passwords.
func appPasswordByID(tx *bolt.Tx, id string) (string, *appPasswordRecord, error) {
	aps, err := appPasswords(tx)
	if err != nil {
		return "", nil, err
	}
	for name, ap := range aps {
		if ap.ID == id {
			return name, ap, nil
		}
	}
	return "", nil, nil
}

// appPasswordName trims name and checks its length.
func appPasswordName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n == 0 || n > MaxAppPasswordNameLength {
		return "", fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidAppPasswordName, MaxAppPasswordNameLength)
	}
	return name, nil
}

// CreateAppPassword creates an app password named name (trimmed of
// surrounding space) and returns it with its secret, "xxxx-xxxx-xxxx-xxxx"
// in lowercase base32. The secret is stored only as a hash. Errors:
// ErrInvalidAppPasswordName, ErrAppPasswordExists, and ErrInvalidToken when
// no account exists (the caller's session names none).
func (s *Store) CreateAppPassword(ctx context.Context, name string, privileged bool) (*AppPassword, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, err := appPasswordName(name)
	if err != nil {
		return nil, err
	}
	var did string
	if err := s.db.View(func(tx *bolt.Tx) error {
		acct, err := s.subject(tx, "")
		if err != nil {
			return err
		}
		did = acct.DID.String()
		return nil
	}); err != nil {
		return nil, err
	}
	password, err := generateAppPassword()
	if err != nil {
		return nil, err
	}
	var hash string
	if perr := s.hashes.Do(WithPriority(ctx), func() { hash, err = hashAppPassword(did, password) }); perr != nil {
		return nil, perr
	}
	if err != nil {
		return nil, err
	}
	id, err := randomID(16)
	if err != nil {
		return nil, err
	}
	rec := &appPasswordRecord{ID: id, Hash: hash, Privileged: privileged, CreatedAt: s.now().UTC()}
	err = s.db.Update(func(tx *bolt.Tx) error {
		// The account may have been replaced between the transactions;
		// the hash's salt is the DID's.
		if _, err := s.subject(tx, did); err != nil {
			return err
		}
		b := tx.Bucket(bucketAppPasswords)
		if b.Get([]byte(name)) != nil {
			return ErrAppPasswordExists
		}
		return putJSON(b, []byte(name), rec)
	})
	if err != nil {
		return nil, err
	}
	return &AppPassword{Name: name, Password: password, Privileged: privileged, CreatedAt: rec.CreatedAt}, nil
}

// ListAppPasswords returns the app passwords, newest first (then by name),
// without their secrets.
func (s *Store) ListAppPasswords(ctx context.Context) ([]AppPassword, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []AppPassword
	err := s.db.View(func(tx *bolt.Tx) error {
		aps, err := appPasswords(tx)
		if err != nil {
			return err
		}
		out = make([]AppPassword, 0, len(aps))
		for name, ap := range aps {
			out = append(out, AppPassword{Name: name, Privileged: ap.Privileged, CreatedAt: ap.CreatedAt})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// RevokeAppPassword deletes the app password named name (trimmed) and, in
// the same transaction, the refresh tokens of its sessions. Its access
// tokens stop working at once (see VerifyAccess). ErrAppPasswordNotFound if
// there is no such app password.
func (s *Store) RevokeAppPassword(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name = strings.TrimSpace(name)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAppPasswords)
		if b.Get([]byte(name)) == nil {
			return ErrAppPasswordNotFound
		}
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		return deleteRefreshTokens(tx, func(r *refreshRecord) bool { return r.AppPassword == name })
	})
}
