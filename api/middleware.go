package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/pdsbox/pds/auth"
)

// logRequests logs one line per request with log/slog.
func logRequests(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			log.InfoContext(r.Context(), "request",
				"method", r.Method, "path", r.URL.Path, "status", ww.Status(),
				"bytes", ww.BytesWritten(), "duration", time.Since(start), "remote", r.RemoteAddr)
		})
	}
}

// recoverPanics answers a panicking handler with a 500 envelope and logs the
// stack, so one bad request never takes the server down.
func recoverPanics(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.ErrorContext(r.Context(), "panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
					writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "InternalServerError", "message": "Internal Server Error"})
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// cors answers like the reference PDS (express cors with maxAge 86400): any
// origin, the requested headers reflected, preflights answered here.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "DPoP-Nonce, WWW-Authenticate, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy, Atproto-Repo-Rev, Atproto-Content-Labelers")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
				h.Add("Vary", "Access-Control-Request-Headers")
			}
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type ctxKey int

const claimsKey ctxKey = 1

// claimsFrom returns the verified access claims of the request.
func claimsFrom(ctx context.Context) *auth.Claims {
	c, _ := ctx.Value(claimsKey).(*auth.Claims)
	return c
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

var errAuthMissing = xerr(http.StatusUnauthorized, "AuthMissing", "Authentication Required")

// access is the access-token policy of a route.
type access int

const (
	// accessAny: full-access sessions and app passwords.
	accessAny access = iota
	// accessFull: only sessions from the account password (the reference's
	// ACCESS_FULL methods: app passwords cannot manage the account).
	accessFull
)

// requireAuth verifies the access token and puts its claims in the context.
func (s *server) requireAuth(level access) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if !ok {
				if r.Header.Get("Authorization") != "" {
					writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Unexpected authorization type"))
					return
				}
				writeError(w, r, s.log, errAuthMissing)
				return
			}
			claims, err := s.auth.VerifyAccess(r.Context(), tok)
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			if level == accessFull && claims.Scope != auth.ScopeAccess {
				writeError(w, r, s.log, xerr(http.StatusBadRequest, "InvalidToken", "Bad token scope"))
				return
			}
			w.Header().Set("Cache-Control", "private")
			w.Header().Add("Vary", "Authorization")
			s.rememberOwner(r)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
		})
	}
}

// DefaultTrustedProxies are the peers whose X-Forwarded-For is believed
// when none are configured: loopback, link-local and unique-local (private)
// addresses, as the reference PDS trusts them (a reverse proxy on the same
// host or network, or Fly.io's proxy on its private IPv6 network).
var DefaultTrustedProxies = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
}

// clientIP is the address of the client: the peer, or, when the peer is a
// trusted proxy, the nearest address in X-Forwarded-For that is not one.
func (s *server) clientIP(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	ip := peer.Addr().Unmap()
	if !s.trusted(ip) {
		return ip.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: stop at the last address we can vouch for
		}
		ip = hop.Unmap()
		if !s.trusted(ip) {
			break
		}
	}
	return ip.String()
}

func (s *server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// rateLimit consumes a point from each limiter for its key, setting the
// RateLimit-* headers of the tightest, and answers 429 when one is spent.
func rateLimit(w http.ResponseWriter, checks ...limitCheck) error {
	for _, c := range checks {
		ok, remaining, reset := c.l.Allow(c.key)
		h := w.Header()
		h.Set("RateLimit-Limit", strconv.Itoa(c.l.Limit()))
		h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
		h.Set("RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
		h.Set("RateLimit-Policy", fmt.Sprintf("%d;w=%d", c.l.Limit(), int(c.l.Window().Seconds())))
		if !ok {
			return auth.ErrRateLimited
		}
	}
	return nil
}

type limitCheck struct {
	l   *auth.RateLimiter
	key string
}

// requireAuthOrService accepts a session access token, or a service-auth JWT
// the account itself signed for this server and method (the video service
// uploads transcoded video to uploadBlob this way).
func (s *server) requireAuthOrService(lxm string) func(http.Handler) http.Handler {
	session := s.requireAuth(accessAny)
	return func(next http.Handler) http.Handler {
		withSession := session(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := bearer(r)
			if typ, alg := jwtHeader(tok); !ok || typ != "JWT" || (alg != "ES256K" && alg != "ES256") {
				withSession.ServeHTTP(w, r)
				return
			}
			rp, err := s.accounts.Repo()
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			pub, err := s.accounts.PublicKey()
			if err != nil {
				writeError(w, r, s.log, err)
				return
			}
			// Only the account's own key can vouch: no lookup needed.
			keys := func(_ context.Context, did syntax.DID, _ bool) (atcrypto.PublicKey, error) {
				if did != rp.DID() {
					return nil, fmt.Errorf("%s is not hosted here", did)
				}
				return pub, nil
			}
			now := time.Now()
			sc, err := auth.VerifyServiceJWTClaims(r.Context(), tok, s.cfg.ServiceDID, lxm, keys, now)
			if err != nil {
				writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthRequired", "%v", err))
				return
			}
			// Each service token once: a replayed one is refused.
			if !s.jtis.Use(sc, now) {
				writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthRequired", "%v: token already used", auth.ErrServiceAuth))
				return
			}
			claims := &auth.Claims{DID: rp.DID(), Scope: auth.ScopeAppPass}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey, claims)))
		})
	}
}

// jwtHeader reads the typ and alg of a JWT's header, verifying nothing.
func jwtHeader(tok string) (typ, alg string) {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", ""
	}
	var hdr struct {
		Typ string `json:"typ"`
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(raw, &hdr)
	return hdr.Typ, hdr.Alg
}
