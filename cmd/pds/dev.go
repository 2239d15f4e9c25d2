package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/plcdir"
	bolt "go.etcd.io/bbolt"
)

// Files of `pds dev` in its data directory, beside the server's.
const (
	devPLCFile      = "plc.db"       // the embedded PLC directory
	devPasswordFile = "dev-password" // the dev account's password (0600)
)

// devOptions configure `pds dev`.
type devOptions struct {
	DataDir   string
	Listen    string // the PDS; its port is in the public URL http://localhost:PORT
	PLCListen string // the embedded PLC directory
	Handle    string
	LogLevel  string
	// Dial, if set, replaces the loopback-only dialer under it (tests
	// record every dial); the loopback rule is applied on top.
	Dial dialFunc
	// Ready, if set, receives the PDS and PLC URLs once both serve.
	Ready func(pdsURL, plcURL string)
}

// devCmd: pds dev [--data DIR] [--listen ADDR] [--plc-listen ADDR] [--handle H].
func devCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := devOptions{}
	fs.StringVar(&o.DataDir, "data", "./dev-data", "data directory of the local network")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:2583", "address of the PDS")
	fs.StringVar(&o.PLCListen, "plc-listen", "127.0.0.1:2582", "address of the embedded PLC directory")
	fs.StringVar(&o.Handle, "handle", "alice.test", "handle of the account (under .test)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.LogLevel = os.Getenv("LOG_LEVEL")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDev(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "pds dev: %v\n", err)
		return 1
	}
	return 0
}

// runDev runs a complete local network until ctx ends: a PLC directory and
// the PDS on loopback, with one account whose credentials it prints. The
// server's own outbound connections are confined to loopback, and the
// environment's PDS_* settings are ignored, so it behaves the same on
// every machine and never touches the public network.
func runDev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	if !isLoopbackAddr(o.Listen) || !isLoopbackAddr(o.PLCListen) {
		return fmt.Errorf("--listen and --plc-listen must be loopback addresses (pds dev is for this machine only; use pds serve for a real host)")
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	log := newLogger(stderr, o.LogLevel)
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return err
	}

	plcDB, err := bolt.Open(filepath.Join(o.DataDir, devPLCFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("opening the PLC directory (is another pds dev running on %s?): %w", o.DataDir, err)
	}
	defer plcDB.Close()
	dir, err := plcdir.Open(plcDB, nil)
	if err != nil {
		return err
	}
	plcLn, err := net.Listen("tcp", o.PLCListen)
	if err != nil {
		return fmt.Errorf("PLC directory: %w", err)
	}
	plcSrv := &http.Server{Handler: dir.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = plcSrv.Serve(plcLn) }()
	defer plcSrv.Close()
	plcURL := "http://" + plcLn.Addr().String()

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("PDS: %w", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	vars := map[string]string{
		"PDS_HOSTNAME":                    "localhost",
		"PDS_PORT":                        strconv.Itoa(port),
		"PDS_DATA_DIRECTORY":              o.DataDir,
		"PDS_DID_PLC_URL":                 plcURL,
		"PDS_SERVICE_HANDLE_DOMAINS":      ".test",
		"PDS_INVITE_REQUIRED":             "true",
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
		"LOG_LEVEL":                       o.LogLevel,
	}
	cfg, err := loadConfig(func(k string) string { return vars[k] }, ln.Addr().String(), "")
	if err != nil {
		return err
	}
	next := o.Dial
	if next == nil {
		next = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	cfg.Dial = loopbackOnly(next)

	a, err := openApp(ctx, cfg, log, 2*time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	password, err := devAccount(ctx, a, o)
	if err != nil {
		return err
	}
	repo, err := a.accounts.Repo()
	if err != nil {
		return err
	}
	acct, err := a.accounts.Account(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `pds dev: a local atproto network on this machine (nothing leaves it)
  PDS:       %s
  PLC:       %s
  handle:    %s
  DID:       %s
  password:  %s
  data:      %s
Log in with any client pointed at the PDS URL, for example:
  goat account login --pds-host %s -u %s -p %s
Stop with Ctrl-C; run again to continue with the same account.
`, cfg.PublicURL, plcURL, acct.Handle, repo.DID(), password, o.DataDir, cfg.PublicURL, acct.Handle, password)

	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go a.blobs.RunGC(ctx, 10*time.Minute, log)
	go a.events.RunPrune(ctx.Done(), time.Hour)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if o.Ready != nil {
		o.Ready(cfg.PublicURL, plcURL)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
		a.events.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
		a.events.Wait(wctx)
		wcancel()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return nil
}

// devAccount creates the dev account on the first run (its password kept,
// 0600, in the data directory so later runs can print it again) and returns
// the password.
func devAccount(ctx context.Context, a *app, o devOptions) (string, error) {
	file := filepath.Join(a.cfg.DataDir, devPasswordFile)
	if a.accounts.Exists() {
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return "(set before; not stored in " + file + ")", nil
		}
		return strings.TrimSpace(string(b)), err
	}
	raw := make([]byte, 10)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	enc := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw))
	password := enc[:4] + "-" + enc[4:8] + "-" + enc[8:12] + "-" + enc[12:16]
	if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
		return "", err
	}
	if _, _, err := a.accounts.Create(ctx, account.CreateParams{Handle: o.Handle, Password: password}); err != nil {
		return "", fmt.Errorf("creating the dev account %s: %w", o.Handle, err)
	}
	return password, nil
}
