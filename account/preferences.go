package account

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

var bucketPrefs = []byte("account_prefs")

const prefsKey = "app.bsky"

// MaxPreferencesBytes bounds the stored preferences.
const MaxPreferencesBytes = 256 << 10

// ErrInvalidPreferences: preferences that are too large, not app.bsky ones,
// without a $type, or that the caller may not set.
var ErrInvalidPreferences = errors.New("invalid preferences")

// PrefsAccess is how much of the preferences a caller may see and change.
type PrefsAccess int

const (
	// PrefsFull is the account's own session: every preference.
	PrefsFull PrefsAccess = iota
	// PrefsNoPersonal is an app password, as the reference decides: it
	// neither sees nor sets personal details (the birth date), and since it
	// cannot see them it cannot drop them either: they are kept as stored.
	PrefsNoPersonal
)

// personalDetailsPref is the preference an app password may not touch.
const personalDetailsPref = "app.bsky.actor.defs#personalDetailsPref"

// visible reports whether a preference of type typ is for a caller.
func (a PrefsAccess) visible(typ string) bool {
	return a == PrefsFull || typ != personalDetailsPref
}

// Preferences returns every stored app.bsky preference (a JSON array of
// objects each with $type), or an empty list.
func (s *Service) Preferences() ([]json.RawMessage, error) {
	return s.PreferencesAs(PrefsFull)
}

// PreferencesAs returns the stored preferences the caller may see.
func (s *Service) PreferencesAs(access PrefsAccess) ([]json.RawMessage, error) {
	var stored []json.RawMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		stored, err = readPrefs(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(stored))
	for _, p := range stored {
		if access.visible(prefType(p)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// PutPreferences replaces the app.bsky preferences with the account's own
// access; see PutPreferencesAs.
func (s *Service) PutPreferences(prefs []json.RawMessage) error {
	return s.PutPreferencesAs(PrefsFull, prefs)
}

// PutPreferencesAs replaces the preferences the caller may see with prefs,
// each an object with an app.bsky $type, keeping those it may not see. The
// kept ones are read in the same transaction as the write, so a concurrent
// change to them is not undone. Errors wrap ErrInvalidPreferences.
func (s *Service) PutPreferencesAs(access PrefsAccess, prefs []json.RawMessage) error {
	for i, p := range prefs {
		t := prefType(p)
		if t == "" {
			return fmt.Errorf("%w: Preference at index %d is missing a $type", ErrInvalidPreferences, i)
		}
		if !strings.HasPrefix(t, "app.bsky.") {
			return fmt.Errorf("%w: Some preferences are not in the app.bsky namespace", ErrInvalidPreferences)
		}
		if !access.visible(t) {
			return fmt.Errorf("%w: Do not have authorization to set preferences.", ErrInvalidPreferences)
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		// A deactivated account migrating in brings its preferences, as
		// the reference allows (ActionImport).
		if err := statusTx(tx).Allows(ActionImport); err != nil {
			return err
		}
		all := make([]json.RawMessage, 0, len(prefs))
		if access != PrefsFull {
			stored, err := readPrefs(tx)
			if err != nil {
				return err
			}
			for _, p := range stored {
				if !access.visible(prefType(p)) {
					all = append(all, p)
				}
			}
		}
		all = append(all, prefs...)
		v, err := json.Marshal(all)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidPreferences, err)
		}
		if len(v) > MaxPreferencesBytes {
			return fmt.Errorf("%w: preferences over %d bytes", ErrInvalidPreferences, MaxPreferencesBytes)
		}
		b, err := tx.CreateBucketIfNotExists(bucketPrefs)
		if err != nil {
			return err
		}
		return b.Put([]byte(prefsKey), v)
	})
}

// readPrefs returns the stored preferences (nil if none).
func readPrefs(tx *bolt.Tx) ([]json.RawMessage, error) {
	b := tx.Bucket(bucketPrefs)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(prefsKey))
	if v == nil {
		return nil, nil
	}
	var out []json.RawMessage
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("stored preferences: %w", err)
	}
	return out, nil
}

// prefType is a preference's $type, "" if it has none or is not an object.
func prefType(p json.RawMessage) string {
	var t struct {
		Type string `json:"$type"`
	}
	_ = json.Unmarshal(p, &t)
	return t.Type
}
