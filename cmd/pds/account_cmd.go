package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

// accountCmd: pds account create|invite.
func accountCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: pds account create --handle H [--email E] (password on stdin or prompted) | invite | info | tokens [--purpose P] | plc-token | delete-token | reset-password | takedown [--ref R] | untakedown")
		return 2
	}
	switch args[0] {
	case "create":
		return accountCreate(args[1:], os.Stdin, stdout, stderr)
	case "invite":
		return accountInvite(args[1:], stdout, stderr)
	case "plc-token":
		return accountToken(auth.PurposePLCOperation, args[1:], stdout, stderr)
	case "delete-token":
		return accountToken(auth.PurposeDeleteAccount, args[1:], stdout, stderr)
	default:
		if code, ok := accountAdminCmd(args, stdout, stderr); ok {
			return code
		}
		fmt.Fprintf(stderr, "pds account: unknown command %q\n", args[0])
		return 2
	}
}

// accountCreate creates the account; the password comes from stdin (a
// prompt when it is a terminal), never from args.
func accountCreate(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account create", stderr)
	handle := fs.String("handle", "", "the account's handle (the hostname itself, or a name under it)")
	email := fs.String("email", "", "the account email (optional)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *handle == "" {
		fmt.Fprintln(stderr, "pds account create: --handle is required (the password is read from stdin or prompted, never from the command line)")
		return 2
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pds account create: %v\n", err)
		return 2
	}
	password := &pw
	cfg, err := loadConfig(os.Getenv, "", *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	if err := plcRefusal(cfg); err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	ctx := context.Background()
	a, err := openApp(ctx, cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	if errors.Is(err, errDBInUse) {
		// The server is running: ask it, as the admin.
		return createViaServer(cfg, *handle, *password, *email, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	defer a.Close()
	acct, _, err := a.accounts.Create(ctx, account.CreateParams{Handle: *handle, Password: *password, Email: *email})
	if err != nil {
		fmt.Fprintf(stderr, "pds: creating the account: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s with handle %s\n", acct.DID, acct.Handle)
	return 0
}

func createViaServer(cfg *config, handle, password, email string, stdout, stderr io.Writer) int {
	out, err := adminRequest(cfg, "POST", "/xrpc/com.atproto.server.createAccount", nil, map[string]any{"handle": handle, "password": password, "email": email})
	if err != nil {
		fmt.Fprintf(stderr, "pds: creating the account: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %v with handle %v\n", out["did"], out["handle"])
	return 0
}

func accountInvite(args []string, stdout, stderr io.Writer) int {
	fs, data := accountFlags("account invite", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a, cfg, ok := offlineOrServer("account invite", *data, stderr)
	if !ok {
		return 1
	}
	if a == nil {
		// The server is running: ask it, as account create does.
		out, err := adminRequest(cfg, "POST", "/xrpc/com.atproto.server.createInviteCode", nil, map[string]any{"useCount": 1})
		if err != nil {
			fmt.Fprintf(stderr, "pds: getting the invite code: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, out["code"])
		return 0
	}
	defer a.Close()
	code, err := a.accounts.InviteCode()
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, code)
	return 0
}

// accountFlags starts the flags of an account subcommand: errors to
// stderr, and --data, the data directory every one of them opens.
func accountFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
}
