package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/pdsbox/pds/auth"
)

// accountToken: pds account plc-token | delete-token. It issues the
// single-use token that requestPlcOperationSignature (or
// requestAccountDelete) would mail, for a box without mail, and prints it as
// its last line. A new token replaces any earlier one of its purpose; it
// lives 15 minutes. While the server runs (it holds the database), the
// server is asked, as the admin.
func accountToken(purpose auth.EmailTokenPurpose, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("account token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(os.Getenv, "", *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	ctx := context.Background()
	a, err := openApp(ctx, cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	if errors.Is(err, errDBInUse) {
		return tokenViaServer(cfg, purpose, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	defer a.Close()
	tok, exp, err := a.accounts.IssueToken(ctx, purpose)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s token, valid until %s:\n%s\n", purpose, exp.UTC().Format(time.RFC3339), tok)
	return 0
}

func tokenViaServer(cfg *config, purpose auth.EmailTokenPurpose, stdout, stderr io.Writer) int {
	host := cfg.Listen
	if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") {
		host = "127.0.0.1:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+host+"/admin/token?purpose="+string(purpose), nil)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	req.SetBasicAuth("admin", cfg.AdminPassword)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "pds: the database is locked by a running server, and asking it failed: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	var out map[string]string
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "pds: issuing the token: %v: %v\n", out["error"], out["message"])
		return 1
	}
	fmt.Fprintf(stdout, "%s token, valid until %s:\n%s\n", purpose, out["expiresAt"], out["token"])
	return 0
}
