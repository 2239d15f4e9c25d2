package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// serve runs the server until SIGINT or SIGTERM, then shuts down gracefully.
func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to listen on (default 127.0.0.1:$PDS_PORT, or $PDS_LISTEN_ADDRESS)")
	data := fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(os.Getenv, *listen, *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	log := newLogger(stderr, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, err := openApp(ctx, cfg, log, 2*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	defer a.Close()

	ln, redirect, err := a.listen()
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	if redirect != nil {
		go func() {
			if err := redirect.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http redirect server", "addr", redirect.Addr, "err", err)
			}
		}()
		defer redirect.Close()
	}
	srv := newHTTPServer(a.handler, log)
	log.Info("pds listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL, "data", cfg.DataDir, "version", version)
	if !a.accounts.Exists() {
		code, err := a.accounts.InviteCode()
		if err == nil {
			fmt.Fprintf(stdout, "No account yet. Create it with:\n  %s account create%s --handle <name>%s (it asks for the password)\nor from a client with invite code %s\n",
				selfCommand(os.Args[0]), dataHint(*data), firstDomain(cfg), code)
		}
	}
	go a.blobs.RunGC(ctx, 10*time.Minute, log)
	go a.events.RunPrune(ctx.Done(), time.Hour)
	go a.crawler.Run(ctx)
	if a.outbox != nil {
		go a.outbox.Run(ctx)
	}
	go a.oauth.Run(ctx, 10*time.Minute)
	if err := a.serveMetricsListener(ctx); err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	go releaseIdleMemory(ctx, 2*time.Second)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(limitListener(ln, cfg)) }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
	case <-ctx.Done():
		log.Info("shutting down")
		// Firehose sockets are hijacked: Shutdown does not wait for them, so
		// close them here and give them a moment to send their close frame.
		a.events.Close()
		wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Second)
		a.events.Wait(wctx)
		wcancel()
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}
	return 0
}

func firstDomain(cfg *config) string {
	if len(cfg.ServiceDomains) > 0 {
		return cfg.ServiceDomains[0]
	}
	return "." + cfg.Hostname
}
