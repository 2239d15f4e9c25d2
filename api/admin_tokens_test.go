package api_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/internal/testpds"
)

// TestAdminTokensRoute: the one admin route for single-use codes (the
// CLI's tokens, plc-token and delete-token) issues every purpose, takes the
// purpose from the query or a JSON body, lists the live purposes when none
// is named, and refuses what it cannot issue.
func TestAdminTokensRoute(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	admin := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:admin-secret"))
	type answer struct {
		Tokens []struct{ Purpose, Token, ExpiresAt string }
		Error  string
	}
	call := func(query string, body any) (int, answer, string) {
		t.Helper()
		st, raw, h := testpds.Request(t, "POST", s.URL+api.EmailTokensPath+query, admin, body, "")
		var a answer
		_ = json.Unmarshal(raw, &a)
		return st, a, h.Get("Cache-Control")
	}

	if st, a, _ := call("?purpose=plc_operation", nil); st != 400 || a.Error != "AccountNotFound" {
		t.Fatalf("without an account: %d %+v", st, a)
	}
	s.CreateAccount(t)
	if st, a, _ := call("", nil); st != 200 || len(a.Tokens) != 0 {
		t.Fatalf("nothing requested yet: %d %+v", st, a)
	}
	for _, tc := range []struct {
		name, query string
		body        any
		purpose     string
	}{
		{"query", "?purpose=plc_operation", nil, "plc_operation"},
		{"body", "", map[string]string{"purpose": "delete_account"}, "delete_account"},
		{"both, equal", "?purpose=confirm_email", map[string]string{"purpose": "confirm_email"}, "confirm_email"},
		{"email flow", "", map[string]string{"purpose": "reset_password"}, "reset_password"},
	} {
		st, a, cc := call(tc.query, tc.body)
		if st != 200 || len(a.Tokens) != 1 || a.Tokens[0].Purpose != tc.purpose || a.Tokens[0].Token == "" || a.Tokens[0].ExpiresAt == "" {
			t.Fatalf("%s: %d %+v", tc.name, st, a)
		}
		if cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", tc.name, cc)
		}
	}
	// No purpose: a fresh code for each live one.
	if st, a, _ := call("", map[string]string{}); st != 200 || len(a.Tokens) != 4 {
		t.Fatalf("live purposes: %d %+v", st, a)
	}
	for _, tc := range []struct {
		name, query string
		body        any
	}{
		{"unknown purpose", "?purpose=anything", nil},
		{"two purposes", "?purpose=plc_operation", map[string]string{"purpose": "delete_account"}},
		{"not JSON", "", []byte("purpose=plc_operation")},
	} {
		if st, a, _ := call(tc.query, tc.body); st != 400 || a.Error != "InvalidRequest" {
			t.Errorf("%s: %d %+v", tc.name, st, a)
		}
	}
	// The older route is gone.
	if st, _, _ := testpds.Request(t, "POST", s.URL+"/admin/token?purpose=plc_operation", admin, nil, ""); st != 404 {
		t.Errorf("/admin/token answers %d", st)
	}
}
