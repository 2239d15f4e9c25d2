package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// config is the whole server configuration, read once from the environment
// (the reference PDS's variable names where the concept is shared) and
// flags, validated, then passed down.
type config struct {
	Hostname       string
	Port           int
	Listen         string // host:port to bind
	DataDir        string
	BlobDir        string
	PublicURL      string
	ServiceDID     string
	ServiceDomains []string
	DIDMethod      string
	PLCURL         string
	InviteRequired bool
	BlobLimit      int64
	// MaxImportBytes bounds an importRepo CAR (PDS_MAX_REPO_IMPORT_SIZE,
	// bytes; 0: the API default, 512 MiB).
	MaxImportBytes int64
	LogLevel       string
	ContactEmail   string
	Crawlers       []string
	EventRetention time.Duration
	AppViewURL     string
	AppViewDID     string
	ReportURL      string
	ReportDID      string
	// AllowPrivateUpstreams lifts the SSRF guard for proxying and
	// resolution (PDS_DEV_ALLOW_PRIVATE_UPSTREAMS): tests and development.
	AllowPrivateUpstreams bool
	// TrustedProxies (PDS_TRUSTED_PROXIES, CIDRs) may name the client in
	// X-Forwarded-For; nil means the API's defaults.
	TrustedProxies []netip.Prefix

	// MinLoginDuration is the least time a login takes (0: the auth
	// default); tests shorten it.
	MinLoginDuration time.Duration
	// Now is the clock of session tokens (nil: time.Now); tests move it.
	Now func() time.Time

	// Email is the SMTP server and outbox settings.
	Email emailConfig

	JWTSecret     []byte
	AdminPassword string
	RotationKey   atcrypto.PrivateKeyExportable
}

// env reads variables through a function so tests can supply their own.
type env func(string) string

func (e env) str(k, def string) string {
	if v := strings.TrimSpace(e(k)); v != "" {
		return v
	}
	return def
}

// defaultBlobLimit is the distro's PDS_BLOB_UPLOAD_LIMIT (100 MiB): videos
// need it; the reference code's own default (5 MiB) refuses most of them.
const defaultBlobLimit = 100 << 20

// loadConfig reads and checks the configuration. Secrets missing from the
// environment are read from, or generated into, the data directory (0600).
func loadConfig(getenv env, listenFlag, dataFlag string) (*config, error) {
	c := &config{
		Hostname:     strings.ToLower(getenv.str("PDS_HOSTNAME", "localhost")),
		DataDir:      getenv.str("PDS_DATA_DIRECTORY", "./data"),
		PLCURL:       strings.TrimSuffix(getenv.str("PDS_DID_PLC_URL", "https://plc.directory"), "/"),
		LogLevel:     getenv.str("LOG_LEVEL", "info"),
		ContactEmail: getenv.str("PDS_CONTACT_EMAIL_ADDRESS", ""),
	}
	if dataFlag != "" {
		c.DataDir = dataFlag
	}
	if c.Hostname != "localhost" {
		if _, err := syntax.ParseHandle(c.Hostname); err != nil {
			return nil, fmt.Errorf("PDS_HOSTNAME %q is not a valid host name (no scheme, port or path): %w", c.Hostname, err)
		}
	}
	port, err := strconv.Atoi(getenv.str("PDS_PORT", "2583"))
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("PDS_PORT %q is not a port number", getenv("PDS_PORT"))
	}
	c.Port = port
	c.Listen = getenv.str("PDS_LISTEN_ADDRESS", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if listenFlag != "" {
		c.Listen = listenFlag
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %w", c.Listen, err)
	}
	if c.Hostname == "localhost" {
		c.PublicURL = "http://localhost:" + strconv.Itoa(port)
	} else {
		c.PublicURL = "https://" + c.Hostname
	}
	if _, err := url.Parse(c.PLCURL); err != nil || !strings.HasPrefix(c.PLCURL, "http") {
		return nil, fmt.Errorf("PDS_DID_PLC_URL %q is not an http(s) URL", c.PLCURL)
	}
	c.ServiceDID = getenv.str("PDS_SERVICE_DID", "did:web:"+c.Hostname)
	// A localhost server cannot hand out *.localhost handles (not an
	// allowed TLD): offer .test, as the reference's dev setup does.
	defDomains := "." + c.Hostname
	if c.Hostname == "localhost" {
		defDomains = ".test"
	}
	domains := getenv.str("PDS_SERVICE_HANDLE_DOMAINS", defDomains)
	for _, d := range strings.Split(domains, ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			if !strings.HasPrefix(d, ".") {
				d = "." + d
			}
			c.ServiceDomains = append(c.ServiceDomains, d)
		}
	}
	c.DIDMethod = getenv.str("PDS_DID_METHOD", "plc")
	if c.DIDMethod != "plc" && c.DIDMethod != "web" {
		return nil, fmt.Errorf("PDS_DID_METHOD must be plc or web, not %q", c.DIDMethod)
	}
	if c.DIDMethod == "web" && !publicHostname(c.Hostname) {
		return nil, fmt.Errorf("PDS_DID_METHOD=web needs a public hostname, and %q is not one: other servers resolve did:web:%s "+
			"by fetching https://%s/.well-known/did.json, which they cannot reach, and clients reject it; "+
			"set PDS_HOSTNAME to the server's public name, or use PDS_DID_METHOD=plc", c.Hostname, c.Hostname, c.Hostname)
	}
	c.InviteRequired = getenv.str("PDS_INVITE_REQUIRED", "true") != "false"
	// A public server announces itself to the main relay unless told
	// otherwise; a localhost one has nobody to tell.
	defCrawlers, defAppView, defAppViewDID, defReport, defReportDID := "", "", "", "", ""
	if c.Hostname != "localhost" {
		defCrawlers = "https://bsky.network"
		defAppView, defAppViewDID = "https://api.bsky.app", "did:web:api.bsky.app"
		defReport, defReportDID = "https://mod.bsky.app", "did:plc:ar7c4by46qjdydhdevvrndac"
	}
	c.AppViewURL = strings.TrimSuffix(getenv.str("PDS_BSKY_APP_VIEW_URL", defAppView), "/")
	c.AppViewDID = getenv.str("PDS_BSKY_APP_VIEW_DID", defAppViewDID)
	c.ReportURL = strings.TrimSuffix(getenv.str("PDS_REPORT_SERVICE_URL", defReport), "/")
	c.ReportDID = getenv.str("PDS_REPORT_SERVICE_DID", defReportDID)
	for _, p := range []struct{ name, u, did string }{{"PDS_BSKY_APP_VIEW", c.AppViewURL, c.AppViewDID}, {"PDS_REPORT_SERVICE", c.ReportURL, c.ReportDID}} {
		if p.u == "" {
			continue
		}
		if pu, err := url.Parse(p.u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return nil, fmt.Errorf("%s_URL %q is not an http(s) URL", p.name, p.u)
		}
		if _, err := syntax.ParseDID(p.did); err != nil {
			return nil, fmt.Errorf("%s_DID %q is not a DID (it is required with %s_URL)", p.name, p.did, p.name)
		}
	}
	c.AllowPrivateUpstreams = getenv.str("PDS_DEV_ALLOW_PRIVATE_UPSTREAMS", "") == "true"
	for _, v := range strings.Split(getenv.str("PDS_TRUSTED_PROXIES", ""), ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("PDS_TRUSTED_PROXIES: %q is not an address or CIDR", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, p.Masked())
	}
	for _, u := range strings.Split(getenv.str("PDS_CRAWLERS", defCrawlers), ",") {
		if u = strings.TrimSpace(u); u != "" {
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
				return nil, fmt.Errorf("PDS_CRAWLERS: %q is not an http(s) URL", u)
			}
			c.Crawlers = append(c.Crawlers, strings.TrimSuffix(u, "/"))
		}
	}
	c.EventRetention = 7 * 24 * time.Hour
	if v := getenv.str("PDS_EVENT_RETENTION", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour {
			return nil, fmt.Errorf("PDS_EVENT_RETENTION %q is not a duration of at least 1h (e.g. 168h)", v)
		}
		c.EventRetention = d
	}
	c.BlobLimit = defaultBlobLimit
	if v := getenv.str("PDS_BLOB_UPLOAD_LIMIT", ""); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("PDS_BLOB_UPLOAD_LIMIT %q is not a positive byte count", v)
		}
		c.BlobLimit = n
	}
	if v := getenv.str("PDS_MAX_REPO_IMPORT_SIZE", ""); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("PDS_MAX_REPO_IMPORT_SIZE %q is not a positive byte count", v)
		}
		c.MaxImportBytes = n
	}

	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", c.DataDir, err)
	}
	probe := filepath.Join(c.DataDir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("data directory %s is not writable: %w", c.DataDir, err)
	}
	_ = os.Remove(probe)
	c.BlobDir = getenv.str("PDS_BLOBSTORE_DISK_LOCATION", filepath.Join(c.DataDir, "blobs"))
	if c.Email, err = loadEmailConfig(getenv); err != nil {
		return nil, err
	}

	secret, err := secretFromEnvOrFile(getenv("PDS_JWT_SECRET"), filepath.Join(c.DataDir, "jwt-secret"), 32)
	if err != nil {
		return nil, fmt.Errorf("PDS_JWT_SECRET: %w", err)
	}
	c.JWTSecret = []byte(secret)
	if c.AdminPassword, err = secretFromEnvOrFile(getenv("PDS_ADMIN_PASSWORD"), filepath.Join(c.DataDir, "admin-password"), 16); err != nil {
		return nil, fmt.Errorf("PDS_ADMIN_PASSWORD: %w", err)
	}
	rk, err := secretFromEnvOrFile(getenv("PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"), filepath.Join(c.DataDir, "plc-rotation-key.hex"), 0)
	if err != nil {
		return nil, fmt.Errorf("PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: %w", err)
	}
	raw, err := hex.DecodeString(rk)
	if err != nil {
		return nil, fmt.Errorf("PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX is not hex: %w", err)
	}
	if c.RotationKey, err = atcrypto.ParsePrivateBytesK256(raw); err != nil {
		return nil, fmt.Errorf("PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX is not a K-256 private key: %w", err)
	}
	return c, nil
}

// privateTLDs are top-level names that never resolve on the public
// internet (RFC 2606, RFC 6761, RFC 6762, RFC 7686, RFC 9476, ICANN's
// .internal): a did:web under one of them is unresolvable for everyone else.
var privateTLDs = map[string]bool{
	"localhost": true, "local": true, "test": true, "example": true, "invalid": true,
	"internal": true, "arpa": true, "onion": true, "alt": true, "home": true, "lan": true, "corp": true,
}

// publicHostname reports whether a hostname (already a valid host name, or
// "localhost") could be reached by other servers: not localhost, not under
// a private-use top-level name.
func publicHostname(h string) bool {
	tld := h[strings.LastIndexByte(h, '.')+1:]
	return strings.Contains(h, ".") && !privateTLDs[tld]
}

// secretFromEnvOrFile returns the environment value if set; otherwise the
// content of file, created with a fresh random value (n random bytes as hex,
// or a K-256 private key when n is 0) and mode 0600 if it does not exist.
func secretFromEnvOrFile(envValue, file string, n int) (string, error) {
	if v := strings.TrimSpace(envValue); v != "" {
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%s is empty", file)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var v string
	if n == 0 {
		k, err := atcrypto.GeneratePrivateKeyK256()
		if err != nil {
			return "", err
		}
		v = hex.EncodeToString(k.Bytes())
	} else {
		raw := make([]byte, n)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		v = hex.EncodeToString(raw)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", err
	}
	return v, f.Close()
}
