package auth

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func newTestEmailTokens(t *testing.T) (*EmailTokens, *bolt.DB, *clock, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pds.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	et, err := NewEmailTokens(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return et, db, clk, path
}

var tokenFormat = regexp.MustCompile(`^[A-Z2-7]{5}-[A-Z2-7]{5}$`)

func TestEmailTokenFormatAndLifetime(t *testing.T) {
	et, _, clk, _ := newTestEmailTokens(t)
	ctx := context.Background()
	seen := map[string]bool{}
	for _, p := range EmailTokenPurposes {
		tok, exp, err := et.Issue(ctx, p)
		if err != nil {
			t.Fatalf("Issue(%s): %v", p, err)
		}
		if !tokenFormat.MatchString(tok) {
			t.Errorf("Issue(%s) = %q, not XXXXX-XXXXX base32", p, tok)
		}
		if seen[tok] {
			t.Errorf("token %q issued twice", tok)
		}
		seen[tok] = true
		if want := clk.Now().Add(15 * time.Minute); !exp.Equal(want) {
			t.Errorf("expiry %v, want %v", exp, want)
		}
	}
	if _, _, err := et.Issue(ctx, "not_a_purpose"); !errors.Is(err, ErrEmailTokenPurpose) {
		t.Errorf("Issue(unknown purpose) = %v, want ErrEmailTokenPurpose", err)
	}
}

func TestEmailTokenConsume(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// use transforms the issued token into what the client sends.
		use     func(tok string) string
		purpose EmailTokenPurpose
		advance time.Duration
		want    error
	}{
		{"exact", func(s string) string { return s }, PurposeResetPassword, 0, nil},
		{"lower case", strings.ToLower, PurposeResetPassword, 0, nil},
		{"without dash", func(s string) string { return strings.ReplaceAll(s, "-", "") }, PurposeResetPassword, 0, nil},
		{"surrounding spaces", func(s string) string { return "  " + s + " " }, PurposeResetPassword, 0, nil},
		{"just before expiry", func(s string) string { return s }, PurposeResetPassword, 15*time.Minute - time.Second, nil},
		{"at expiry", func(s string) string { return s }, PurposeResetPassword, 15 * time.Minute, ErrEmailTokenExpired},
		{"long expired", func(s string) string { return s }, PurposeResetPassword, 24 * time.Hour, ErrEmailTokenExpired},
		{"other purpose", func(s string) string { return s }, PurposeDeleteAccount, 0, ErrEmailTokenInvalid},
		{"one char changed", flipFirst, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"empty", func(string) string { return "" }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"truncated", func(s string) string { return s[:10] }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"extra char", func(s string) string { return s + "A" }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"non-base32", func(s string) string { return "00000-11111" }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"huge", func(s string) string { return strings.Repeat(s, 1000) }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
		{"unicode", func(s string) string { return s[:5] + "\u00e9" + s[6:] }, PurposeResetPassword, 0, ErrEmailTokenInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			et, _, clk, _ := newTestEmailTokens(t)
			tok, _, err := et.Issue(ctx, PurposeResetPassword)
			if err != nil {
				t.Fatal(err)
			}
			clk.Add(tc.advance)
			if err := et.Check(ctx, tc.purpose, tc.use(tok)); !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if err := et.Consume(ctx, tc.purpose, tc.use(tok)); !errors.Is(err, tc.want) {
				t.Fatalf("Consume = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				// A refused attempt does not use the token up.
				if tc.advance == 0 {
					if err := et.Consume(ctx, PurposeResetPassword, tok); err != nil {
						t.Fatalf("the right token after a refused one: %v", err)
					}
				}
				return
			}
			// Single use: the second use is refused, in every spelling.
			for _, again := range []string{tok, tc.use(tok)} {
				if err := et.Consume(ctx, tc.purpose, again); !errors.Is(err, ErrEmailTokenInvalid) {
					t.Fatalf("second Consume = %v, want ErrEmailTokenInvalid", err)
				}
			}
		})
	}
}

func flipFirst(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

func TestEmailTokenReissueReplaces(t *testing.T) {
	ctx := context.Background()
	et, _, _, _ := newTestEmailTokens(t)
	old, _, err := et.Issue(ctx, PurposeConfirmEmail)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := et.Issue(ctx, PurposePLCOperation)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := et.Issue(ctx, PurposeConfirmEmail)
	if err != nil {
		t.Fatal(err)
	}
	if err := et.Consume(ctx, PurposeConfirmEmail, old); !errors.Is(err, ErrEmailTokenInvalid) {
		t.Fatalf("superseded token: %v, want ErrEmailTokenInvalid", err)
	}
	if err := et.Consume(ctx, PurposeConfirmEmail, fresh); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	// Other purposes are untouched.
	if err := et.Consume(ctx, PurposePLCOperation, other); err != nil {
		t.Fatalf("token of another purpose: %v", err)
	}
}

func TestEmailTokenStoredHashed(t *testing.T) {
	ctx := context.Background()
	et, db, _, path := newTestEmailTokens(t)
	var toks []string
	for _, p := range EmailTokenPurposes {
		tok, _, err := et.Issue(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		for _, form := range []string{tok, strings.ReplaceAll(tok, "-", "")} {
			if bytes.Contains(raw, []byte(form)) {
				t.Errorf("database file holds the plain token %q", form)
			}
		}
	}
}

func TestEmailTokenConsumeTxRollback(t *testing.T) {
	ctx := context.Background()
	et, db, _, _ := newTestEmailTokens(t)
	tok, _, err := et.Issue(ctx, PurposeUpdateEmail)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("the change the token authorizes failed")
	err = db.Update(func(tx *bolt.Tx) error {
		if err := et.ConsumeTx(tx, PurposeUpdateEmail, tok); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if err := et.Consume(ctx, PurposeUpdateEmail, tok); err != nil {
		t.Fatalf("token after a rolled-back use: %v", err)
	}
}

func TestEmailTokenLiveAndDeleteAll(t *testing.T) {
	ctx := context.Background()
	et, db, clk, _ := newTestEmailTokens(t)
	if _, _, err := et.Issue(ctx, PurposeResetPassword); err != nil {
		t.Fatal(err)
	}
	clk.Add(10 * time.Minute)
	plc, _, err := et.Issue(ctx, PurposePLCOperation)
	if err != nil {
		t.Fatal(err)
	}
	live, err := et.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 || live[0].Purpose != PurposeResetPassword || live[1].Purpose != PurposePLCOperation {
		t.Fatalf("Live = %+v, want reset_password then plc_operation", live)
	}
	clk.Add(6 * time.Minute) // the reset token is 16 minutes old now
	live, err = et.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].Purpose != PurposePLCOperation || !live[0].ExpiresAt.Equal(clk.Now().Add(9*time.Minute)) {
		t.Fatalf("Live = %+v, want only plc_operation expiring in 9 minutes", live)
	}
	if err := db.Update(et.DeleteAllTx); err != nil {
		t.Fatal(err)
	}
	if err := et.Consume(ctx, PurposePLCOperation, plc); !errors.Is(err, ErrEmailTokenInvalid) {
		t.Fatalf("token after DeleteAllTx: %v", err)
	}
	if live, _ := et.Live(ctx); len(live) != 0 {
		t.Fatalf("Live after DeleteAllTx = %+v", live)
	}
}

func TestEmailTokenSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	et, db, clk, path := newTestEmailTokens(t)
	tok, _, err := et.Issue(ctx, PurposeDeleteAccount)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db2, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	et2, err := NewEmailTokens(db2, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := et2.Consume(ctx, PurposeDeleteAccount, tok); err != nil {
		t.Fatalf("token after reopening the database: %v", err)
	}
}

func TestEmailTokenConcurrentConsumeOnce(t *testing.T) {
	ctx := context.Background()
	et, _, _, _ := newTestEmailTokens(t)
	tok, _, err := et.Issue(ctx, PurposeResetPassword)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- et.Consume(ctx, PurposeResetPassword, tok)
		}()
	}
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrEmailTokenInvalid):
			t.Errorf("Consume: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses succeeded, want exactly 1", ok, n)
	}
}
