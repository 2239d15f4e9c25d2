package api

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/pdsbox/pds/internal/connlimit"
)

const (
	// adminAttempts is the admin API calls with Basic credentials allowed
	// per address in 5 minutes: enough for the operator's tools and a
	// metrics scraper, far too few to guess a generated password.
	adminAttempts = 300
	// createAdminAttempts bounds admin credentials on createAccount, which
	// the operator uses once: a handful.
	createAdminAttempts = 10
	// knownAddrTTL is how long an address the owner used stays known.
	knownAddrTTL = 30 * 24 * time.Hour
)

// addrKey is the rate-limit key of the client: its address, or its /64
// for IPv6 (one machine holds a whole /64, so per-address buckets there
// would be unlimited).
func (s *server) addrKey(r *http.Request) string {
	ip, err := netip.ParseAddr(s.clientIP(r))
	if err != nil {
		return s.clientIP(r)
	}
	return connlimit.Key(ip).String()
}

// rememberOwner marks the client's address as the owner's after a request
// with a valid session token, so that its logins are never locked out by
// guesses from elsewhere.
func (s *server) rememberOwner(r *http.Request) { s.knownAddrs.Remember(s.addrKey(r)) }
