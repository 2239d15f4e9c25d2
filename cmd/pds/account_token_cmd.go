package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/auth"
)

// issueTokens issues fresh single-use codes for the operator: one for
// purpose, or one for every purpose with a live code when purpose is "".
// With the database free (a set) it issues them itself; while the server
// holds the database (a nil) it asks the server, as the admin, on its one
// route for this (api.EmailTokensPath).
func issueTokens(a *app, cfg *config, purpose string) ([]account.IssuedToken, error) {
	if a != nil {
		return a.email.IssueForOperator(context.Background(), purpose)
	}
	out, err := adminRequest(cfg, "POST", api.EmailTokensPath, nil, map[string]string{"purpose": purpose})
	if err != nil {
		return nil, err
	}
	var issued []account.IssuedToken
	toks, _ := out["tokens"].([]any)
	for _, t := range toks {
		m, _ := t.(map[string]any)
		tok, _ := m["token"].(string)
		p, _ := m["purpose"].(string)
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(m["expiresAt"]))
		if tok == "" || err != nil {
			return nil, fmt.Errorf("the server answered an unreadable token: %v", m)
		}
		issued = append(issued, account.IssuedToken{Purpose: auth.EmailTokenPurpose(p), Token: tok, ExpiresAt: exp})
	}
	return issued, nil
}

// accountToken: pds account plc-token | delete-token. It issues the
// single-use token that requestPlcOperationSignature (or
// requestAccountDelete) would mail, for a box without mail, and prints it as
// its last line. A new token replaces any earlier one of its purpose; it
// lives 15 minutes. While the server runs (it holds the database), the
// server is asked, as the admin.
func accountToken(purpose auth.EmailTokenPurpose, args []string, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account token", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a, cfg, ok := offlineOrServer("account token", *data, stderr)
	if !ok {
		return 1
	}
	if a != nil {
		defer a.Close()
	}
	issued, err := issueTokens(a, cfg, string(purpose))
	if err == nil && len(issued) != 1 {
		err = fmt.Errorf("%d tokens issued for %s, want 1", len(issued), purpose)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pds: issuing the token: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s token, valid until %s:\n%s\n", purpose, issued[0].ExpiresAt.UTC().Format(time.RFC3339), issued[0].Token)
	return 0
}
