package main

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
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
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, opsPrefix) {
			mux.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
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
