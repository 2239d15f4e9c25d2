package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pdsbox/pds/account"
)

// The operator's account commands: each works on the data directory when
// the server is stopped, and through the running server's admin API (HTTP
// Basic with the admin password, on the loopback address) when it runs.

// accountAdminCmd runs pds account tokens|reset-password|info|takedown|
// untakedown; ok is false for another command.
func accountAdminCmd(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	cmds := map[string]func([]string, io.Writer, io.Writer) int{
		"tokens":         accountTokens,
		"reset-password": accountResetPassword,
		"info":           accountInfo,
		"takedown":       accountTakedown(true),
		"untakedown":     accountTakedown(false),
	}
	run, ok := cmds[args[0]]
	if !ok {
		return 0, false
	}
	return run(args[1:], stdout, stderr), true
}

// offlineOrServer opens the data directory; when a running server holds
// it, a is nil and cfg serves to reach that server.
func offlineOrServer(name, dataFlag string, stderr io.Writer) (a *app, cfg *config, ok bool) {
	cfg, err := loadConfig(os.Getenv, "", dataFlag)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return nil, nil, false
	}
	a, err = openApp(context.Background(), cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	if errors.Is(err, errDBInUse) {
		return nil, cfg, true
	}
	if err != nil {
		fmt.Fprintf(stderr, "pds %s: %v\n", name, err)
		return nil, nil, false
	}
	return a, cfg, true
}

// adminRequest calls the server running on this data directory (it holds
// the database) as the admin, on its listen address, and decodes its JSON
// answer (nil for an empty one). It is the account commands' one client.
func adminRequest(cfg *config, method, path string, query url.Values, body any) (map[string]any, error) {
	u := localURL(cfg) + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth("admin", cfg.AdminPassword)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("the database is locked by a running server, and asking it at %s failed: %w", localURL(cfg), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, fmt.Errorf("%s: %s", resp.Status, raw)
		}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%v: %v", out["error"], out["message"])
	}
	return out, nil
}

// serverDID asks the running server for the account's DID (as pdsadmin
// does, from listRepos).
func serverDID(cfg *config) (string, error) {
	out, err := adminRequest(cfg, "GET", "/xrpc/com.atproto.sync.listRepos", nil, nil)
	if err != nil {
		return "", err
	}
	repos, _ := out["repos"].([]any)
	if len(repos) == 0 {
		return "", errors.New("the server has no account")
	}
	did, _ := repos[0].(map[string]any)["did"].(string)
	return did, nil
}

// accountTokens: pds account tokens [--purpose P]. Plain codes are never
// stored, so it prints FRESH codes: for every purpose someone asked a code
// for (still live), or for --purpose. A fresh code replaces the mailed one.
func accountTokens(args []string, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account tokens", stderr)
	purpose := fs.String("purpose", "", "issue a code for this purpose (confirm_email, update_email, reset_password, delete_account, plc_operation) even if none was requested")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a, cfg, ok := offlineOrServer("account tokens", *data, stderr)
	if !ok {
		return 1
	}
	if a != nil {
		defer a.Close()
	}
	issued, err := issueTokens(a, cfg, *purpose)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	if len(issued) == 0 {
		fmt.Fprintln(stdout, "no code has been requested in the last 15 minutes (use --purpose to issue one)")
		return 0
	}
	fmt.Fprintln(stdout, "PURPOSE\tCODE\tEXPIRES")
	for _, t := range issued {
		fmt.Fprintf(stdout, "%s\t%s\t%s\n", t.Purpose, t.Token, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(stderr, "These codes replace any mailed earlier; each works once.")
	return 0
}

// randomPassword makes a password as pdsadmin does (24 random characters).
func randomPassword() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// accountResetPassword: pds account reset-password [--password P]. Every
// session ends; without --password a random one is made and printed.
func accountResetPassword(args []string, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account reset-password", stderr)
	password := fs.String("password", "", "the new password (default: a random one, printed)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	pw := *password
	if pw == "" {
		pw = randomPassword()
	}
	a, cfg, ok := offlineOrServer("account reset-password", *data, stderr)
	if !ok {
		return 1
	}
	if a != nil {
		defer a.Close()
		if err := a.accounts.SetPassword(context.Background(), pw); err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
	} else {
		did, err := serverDID(cfg)
		if err == nil {
			_, err = adminRequest(cfg, "POST", "/xrpc/com.atproto.admin.updateAccountPassword", nil, map[string]string{"did": did, "password": pw})
		}
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
	}
	if *password == "" {
		fmt.Fprintf(stdout, "new password: %s\n", pw)
	} else {
		fmt.Fprintln(stdout, "password changed")
	}
	fmt.Fprintln(stderr, "Every session of the account has been signed out.")
	return 0
}

// accountInfo: pds account info — the admin view of the account.
func accountInfo(args []string, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account info", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a, cfg, ok := offlineOrServer("account info", *data, stderr)
	if !ok {
		return 1
	}
	var info map[string]any
	if a != nil {
		defer a.Close()
		acct, err := a.accounts.Account(context.Background())
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
		info = map[string]any{"did": acct.DID.String(), "handle": acct.Handle.String(), "email": acct.Email,
			"indexedAt": acct.CreatedAt.UTC().Format(time.RFC3339)}
		if !acct.EmailConfirmedAt.IsZero() {
			info["emailConfirmedAt"] = acct.EmailConfirmedAt.UTC().Format(time.RFC3339)
		}
		st, err := a.accounts.Status(context.Background())
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
		info["active"] = st == account.StatusActive
		if st != account.StatusActive {
			info["status"] = string(st)
		}
		if ref := a.accounts.AccountTakedownRef(); ref != "" {
			info["takedownRef"] = ref
		}
	} else {
		did, err := serverDID(cfg)
		if err == nil {
			info, err = adminRequest(cfg, "GET", "/xrpc/com.atproto.admin.getAccountInfo", url.Values{"did": {did}}, nil)
		}
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
		if st, err := adminRequest(cfg, "GET", "/xrpc/com.atproto.sync.getRepoStatus", url.Values{"did": {did}}, nil); err == nil {
			info["active"], info["status"] = st["active"], st["status"]
		}
	}
	for _, k := range []string{"did", "handle", "email", "emailConfirmedAt", "indexedAt", "active", "status", "takedownRef"} {
		if v, ok := info[k]; ok && v != nil && v != "" {
			fmt.Fprintf(stdout, "%-17s %v\n", k+":", v)
		}
	}
	return 0
}
