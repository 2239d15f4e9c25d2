package api

import (
	"net/http"
	"strings"
)

// hasBasicAuth reports whether the request carries HTTP Basic credentials.
func hasBasicAuth(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	return len(h) >= 6 && strings.EqualFold(h[:6], "basic ")
}

// limitAdmin counts an admin credential attempt against the client
// address's budget (adminAttempts per 5 minutes); 429 beyond. Call it for
// every request carrying Basic credentials, before anything else answers.
func (s *server) limitAdmin(w http.ResponseWriter, r *http.Request) error {
	return rateLimit(w.Header(), limitCheck{s.adminLimit, s.addrKey(r)})
}

// limitCreateAdmin is limitAdmin for createAccount, with its own tighter
// budget (createAdminAttempts).
func (s *server) limitCreateAdmin(h http.Header, r *http.Request) error {
	return rateLimit(h, limitCheck{s.createAdminLimit, s.addrKey(r)})
}
