package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// opsPrefix holds the operator's HTTP endpoints, beside (not inside) the
// XRPC API: backups for `pds backup` against a running server, and the
// like. Every one of them requires the admin password.
const opsPrefix = "/_pds/"

// withOps routes opsPrefix to the operator endpoints and everything else
// to next.
func (a *app) withOps(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+opsPrefix+"backup", a.requireAdmin(http.HandlerFunc(a.serveBackup)))
	mux.Handle("GET "+opsPrefix+"status", a.requireAdmin(http.HandlerFunc(a.serveStatusJSON)))
	// The status page is the operator's: it names what is wrong with the
	// host (disk free, relay state, DNS) and each check reaches the
	// network. Visitors get the reference PDS's plain banner at / (api).
	mux.Handle("GET "+opsPrefix+"{$}", a.requireAdmin(http.HandlerFunc(a.serveStatusPage)))
	if a.metrics != nil && a.cfg.Metrics {
		mux.Handle("GET /metrics", a.requireAdmin(a.metrics.handler()))
	}
	h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, opsPrefix) || r.URL.Path == "/metrics" {
			mux.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	}))
	if a.metrics != nil {
		h = a.metrics.instrument(h)
	}
	return h
}

// onPublish runs after each event reaches the live firehose.
func (a *app) onPublish() {
	a.crawler.Notify()
	if a.metrics != nil {
		a.metrics.events.Inc()
	}
}

// serveMetricsListener serves /metrics on cfg.MetricsListen, if set, until
// ctx ends.
func (a *app) serveMetricsListener(ctx context.Context) error {
	if a.metrics == nil || a.cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("PDS_METRICS_LISTEN: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() { _ = srv.Serve(ln) }()
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// requireAdmin admits HTTP Basic admin:<PDS_ADMIN_PASSWORD> only.
func (a *app) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "admin" || a.cfg.AdminPassword == "" ||
			subtle.ConstantTimeCompare([]byte(pass), []byte(a.cfg.AdminPassword)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="pds admin"`)
			writeXRPCError(w, http.StatusUnauthorized, "AuthenticationRequired", "the admin password is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeXRPCError answers with the XRPC error envelope.
func writeXRPCError(w http.ResponseWriter, status int, name, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": name, "message": msg})
}
