package api

import (
	"net/http"
	"strings"

	"github.com/pdsbox/pds/identity"
)

func writeText(w http.ResponseWriter, status int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(s))
}

func (s *server) landing(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, `This is an AT Protocol Personal Data Server (PDS), hosting one account.

Most API routes are under /xrpc/

Protocol: https://atproto.com
`)
}

func (s *server) robots(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, "# Hello!\n\n# Crawling the public API is allowed\nUser-agent: *\nAllow: /\n")
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	// As the reference: 503 when the database does not answer, so that a
	// supervisor restarts a wedged server.
	if s.healthCheck != nil {
		if err := s.healthCheck(); err != nil {
			s.log.Error("health check: database", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"version": s.cfg.Version, "error": "Service Unavailable"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"version": s.cfg.Version})
}

// atprotoDID answers the handle check for the account's handle: the server
// hostname itself or any name under it that routes here needs no DNS record.
func (s *server) atprotoDID(w http.ResponseWriter, r *http.Request) {
	acct, err := s.accounts.Account(r.Context())
	if err != nil || !strings.EqualFold(hostOf(r), acct.Handle.String()) {
		writeText(w, http.StatusNotFound, "User not found")
		return
	}
	writeText(w, http.StatusOK, acct.DID.String())
}

// didJSON serves the did:web document when the account is did:web:<host>.
func (s *server) didJSON(w http.ResponseWriter, r *http.Request) {
	acct, err := s.accounts.Account(r.Context())
	if err != nil || acct.DID.String() != "did:web:"+hostOf(r) {
		writeError(w, r, s.log, xerr(http.StatusNotFound, "NotFound", "no did:web document on this host"))
		return
	}
	pub, err := s.accounts.PublicKey()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, identity.DIDWebDocument(acct.DID, acct.Handle, pub, s.cfg.PublicURL))
}

// hostOf is the request's host name without port, lower-cased.
func hostOf(r *http.Request) string {
	h := r.Host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}
