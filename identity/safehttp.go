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
	// IPv6 forms that carry an IPv4 address reach that address: judge it.
	if v4, ok := embeddedIPv4(ip); ok {
		return PublicAddr(v4)
	}
	return true
}

// embeddedIPv4 returns the IPv4 address an IPv6 transition address routes
// to: 6to4 (2002:V4ADDR::/48) and Teredo (2001:0::/32, the server at bits
// 32-63, the client obfuscated in the last 32). IPv4-compatible (::/96),
// IPv4-translated and NAT64 prefixes are refused outright (nonPublic).
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case b[0] == 0x20 && b[1] == 0x02: // 6to4
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0: // Teredo
		server := netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		if !PublicAddr(server) {
			return server, true
		}
		return client, true
	}
	return netip.Addr{}, false
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
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (::7f00:1 is 127.0.0.1)
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (SIIT)
	netip.MustParsePrefix("100::/64"),        // discard-only
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
