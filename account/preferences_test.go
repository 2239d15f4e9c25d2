package account_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/internal/testpds"
)

// The privacy rule: an app password neither sees nor sets personal
// details, and its put keeps the stored ones.
func TestPreferencesAccess(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	s.CreateAccount(t)
	a := s.Accounts
	raw := func(ss ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(ss))
		for i, x := range ss {
			out[i] = json.RawMessage(x)
		}
		return out
	}
	adult := `{"$type":"app.bsky.actor.defs#adultContentPref","enabled":true}`
	birth := `{"$type":"app.bsky.actor.defs#personalDetailsPref","birthDate":"1990-01-01T00:00:00.000Z"}`
	saved := `{"$type":"app.bsky.actor.defs#savedFeedsPrefV2","items":[]}`
	get := func(acc account.PrefsAccess) string {
		p, err := a.PreferencesAs(acc)
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(p))
		for i, x := range p {
			parts[i] = string(x)
		}
		return strings.Join(parts, ",")
	}
	steps := []struct {
		name    string
		access  account.PrefsAccess
		put     []json.RawMessage
		wantErr error
		full    string
		app     string
	}{
		{"full put", account.PrefsFull, raw(adult, birth), nil, adult + "," + birth, adult},
		{"app may not set personal details", account.PrefsNoPersonal, raw(birth), account.ErrInvalidPreferences, adult + "," + birth, adult},
		{"app put keeps personal details", account.PrefsNoPersonal, raw(saved), nil, birth + "," + saved, saved},
		{"missing $type", account.PrefsFull, raw(`{"x":1}`), account.ErrInvalidPreferences, birth + "," + saved, saved},
		{"not app.bsky", account.PrefsFull, raw(`{"$type":"com.example.p"}`), account.ErrInvalidPreferences, birth + "," + saved, saved},
		{"full put drops them", account.PrefsFull, raw(), nil, "", ""},
	}
	for _, st := range steps {
		err := a.PutPreferencesAs(st.access, st.put)
		if !errors.Is(err, st.wantErr) || (err == nil) != (st.wantErr == nil) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
		}
		if got := get(account.PrefsFull); got != st.full {
			t.Fatalf("%s: full sees %s, want %s", st.name, got, st.full)
		}
		if got := get(account.PrefsNoPersonal); got != st.app {
			t.Fatalf("%s: app sees %s, want %s", st.name, got, st.app)
		}
	}
}
