package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrForbiddenTarget is returned for an outbound request to a target the
// SSRF guard refuses: not https, or an address that is not public unicast.
var ErrForbiddenTarget = errors.New("forbidden outbound target")

// PublicAddr reports whether ip is a public unicast address: not loopback,
// private, link-local, multicast, unspecified, CGNAT or documentation space.
func PublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 can reach private IPv4
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("fc00::/7"),        // unique local
}

// NewSafeClient returns an HTTP client for requests whose target comes from
// the network (DID documents, handles, proxy targets): https only, and every
// connection, including redirects and every address DNS returns, must go to
// a public unicast address. allowPrivate lifts both rules; it exists for
// tests and development against 127.0.0.1 and must never be set in
// production.
func NewSafeClient(timeout time.Duration, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		// Checked on the resolved address at connect time, so DNS
		// rebinding cannot slip a private address past the check.
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !PublicAddr(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrForbiddenTarget, address)
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
	}
	var rt http.RoundTripper = tr
	if !allowPrivate {
		rt = httpsOnly{tr}
	}
	return &http.Client{
		Transport: rt,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
}

type httpsOnly struct{ rt http.RoundTripper }

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return nil, fmt.Errorf("%w: %s is not https", ErrForbiddenTarget, r.URL.Redacted())
	}
	return h.rt.RoundTrip(r)
}

// CheckTarget applies the guard's rules to a URL before any request: https
// (unless allowPrivate) and, for a literal IP host, a public address.
func CheckTarget(ctx context.Context, rawURL string, allowPrivate bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenTarget, err)
	}
	if allowPrivate {
		if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
			return fmt.Errorf("%w: scheme %q", ErrForbiddenTarget, req.URL.Scheme)
		}
		return nil
	}
	if req.URL.Scheme != "https" {
		return fmt.Errorf("%w: %s is not https", ErrForbiddenTarget, req.URL.Redacted())
	}
	if ip, err := netip.ParseAddr(req.URL.Hostname()); err == nil && !PublicAddr(ip) {
		return fmt.Errorf("%w: %s", ErrForbiddenTarget, ip)
	}
	return nil
}
