package account_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/internal/testpds"
)

// TestStatusRules drives the status transitions over a real server and
// checks what each status lets the account do, over HTTP.
func TestStatusRules(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	did, access, _ := s.CreateAccount(t)
	ctx := context.Background()
	write := func() (int, map[string]any) {
		return s.Call(t, "POST", "com.atproto.repo.createRecord", access, map[string]any{
			"repo": did, "collection": "app.bsky.feed.post",
			"record": map[string]any{"$type": "app.bsky.feed.post", "text": "hi", "createdAt": "2026-01-01T00:00:00Z"},
		})
	}
	prefs := func() (int, map[string]any) {
		return s.Call(t, "POST", "app.bsky.actor.putPreferences", access, map[string]any{"preferences": []any{}})
	}
	session := func() (int, map[string]any) {
		return s.Call(t, "GET", "com.atproto.server.getSession", access, nil)
	}
	steps := []struct {
		name       string
		change     func(context.Context) error
		changeErr  error
		writeCode  int
		writeError string
		active     bool
		status     any
	}{
		{"created", nil, nil, 200, "", true, nil},
		{"deactivate", s.Accounts.Deactivate, nil, 400, "AccountDeactivated", false, "deactivated"},
		{"activate", s.Accounts.Activate, nil, 200, "", true, nil},
		{"take down", s.Accounts.Takedown, nil, 401, "AccountTakedown", false, "takendown"},
		{"owner cannot lift a takedown", s.Accounts.Activate, account.ErrInvalidTransition, 401, "AccountTakedown", false, "takendown"},
		{"reverse takedown", s.Accounts.ReverseTakedown, nil, 200, "", true, nil},
	}
	for _, step := range steps {
		if step.change != nil {
			if err := step.change(ctx); !errors.Is(err, step.changeErr) {
				t.Fatalf("%s: %v, want %v", step.name, err, step.changeErr)
			}
		}
		for what, call := range map[string]func() (int, map[string]any){"createRecord": write, "putPreferences": prefs} {
			st, out := call()
			wantCode, wantErr := step.writeCode, step.writeError
			if what == "putPreferences" && step.status == "deactivated" {
				// A deactivated account migrating in brings its
				// preferences (issue 12, as the reference allows).
				wantCode, wantErr = 200, ""
			}
			if st != wantCode || (wantErr != "" && out["error"] != wantErr) {
				t.Errorf("%s: %s answered %d %v, want %d %s", step.name, what, st, out, wantCode, wantErr)
			}
		}
		st, out := session()
		if step.status == "takendown" {
			// Every authenticated call of a taken-down account is refused.
			if st != 401 || out["error"] != "AccountTakedown" {
				t.Errorf("%s: getSession answered %d %v, want 401 AccountTakedown", step.name, st, out)
			}
			continue
		}
		if st != 200 || out["active"] != step.active || out["status"] != step.status {
			t.Errorf("%s: getSession active=%v status=%v, want %v %v", step.name, out["active"], out["status"], step.active, step.status)
		}
	}
}
