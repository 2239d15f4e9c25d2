package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// dialFunc opens outbound connections. config.Dial, when set, carries every
// connection the server itself starts (PLC directory, DID and handle
// resolution with its DNS lookups, crawl requests), so that `pds dev` can
// confine them to this machine.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// errNotLoopback is the answer of a loopback-only dialer to any other address.
var errNotLoopback = errors.New("pds dev makes no connection outside this machine")

// loopbackOnly dials only literal loopback addresses and "localhost"; every
// other target (a public host, a DNS server) is refused before any packet
// leaves. Host names other than localhost are refused rather than resolved,
// because resolving them would itself reach the network.
func loopbackOnly(next dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !isLoopbackAddr(addr) {
			return nil, fmt.Errorf("%w: %s %s", errNotLoopback, network, addr)
		}
		return next(ctx, network, addr)
	}
}

// isLoopbackAddr reports whether host:port names this machine by a loopback
// IP literal or "localhost".
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// httpClientWith returns an HTTP client whose connections go through dial.
func httpClientWith(dial dialFunc, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           dial,
			Proxy:                 nil, // never an environment proxy: it would leave the machine
			MaxIdleConns:          10,
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
		},
	}
}

// resolverWith returns a DNS resolver whose queries go through dial.
func resolverWith(dial dialFunc) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: dial}
}
