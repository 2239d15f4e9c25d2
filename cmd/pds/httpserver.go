package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/internal/connlimit"
)

// Server limits against slow and hostile clients. Routes that stream for
// longer (getRepo, getBlob, uploadBlob, the firehose) set their own
// deadlines per read or write instead (api.StreamDeadlines, websocket).
const (
	// readHeaderTimeout: slow headers are cut off after this.
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds reading a whole request (headers and body).
	readTimeout = 30 * time.Second
	// writeTimeout bounds writing a response, counted from the end of the
	// request headers; proxied AppView calls fit well inside it.
	writeTimeout = 60 * time.Second
	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 90 * time.Second
	// maxHeaderBytes: bearer and DPoP tokens are a few KB, but a getBlocks
	// query naming its maximum of 1,000 CIDs is 65 KB of request line; the
	// default (1 MB) let 1,000 slow clients hold a gigabyte.
	maxHeaderBytes = 128 << 10
	// connsPerAddr caps open connections per client (IPv4 address or IPv6
	// /64); browsers use 6, relays one, the AppView's image proxy a few
	// dozen. Trusted proxies are exempt (they carry many clients).
	connsPerAddr = 64
	// maxConns caps all open connections, well below the file descriptor
	// limit, so health checks and the database always have descriptors.
	maxConns = 4096
)

// newHTTPServer is the http.Server of `pds serve`, with its timeouts and
// header limit.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// limitListener applies the per-address and total connection caps to ln.
func limitListener(ln net.Listener, cfg *config) *connlimit.Listener {
	trusted := cfg.TrustedProxies
	if trusted == nil {
		trusted = api.DefaultTrustedProxies
	}
	exempt := func(ip netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
	return connlimit.New(ln, connsPerAddr, maxConns, exempt)
}
