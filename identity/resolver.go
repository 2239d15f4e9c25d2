package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	iidentity "github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Errors of resolution.
var (
	ErrHandleNotFound  = errors.New("handle does not resolve")
	ErrServiceNotFound = errors.New("DID document has no such service")
)

// TXTResolver looks up DNS TXT records; *net.Resolver satisfies it, and
// tests supply a fake.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Resolver resolves DIDs to documents and handles to DIDs, with a cache.
type Resolver struct {
	PLC *PLCClient
	// HTTP fetches did:web documents and handle well-known files; use an
	// SSRF-guarded client (NewSafeClient).
	HTTP *http.Client
	DNS  TXTResolver
	// WellKnownURL maps a handle to its atproto-did URL (default
	// https://<handle>/.well-known/atproto-did); tests point it at 127.0.0.1.
	WellKnownURL func(handle syntax.Handle) string
	// DIDWebURL maps a did:web host to its did.json URL (default
	// https://<host>/.well-known/did.json).
	DIDWebURL func(host string) string
	TTL       time.Duration // cache lifetime, default 10 minutes

	mu    sync.Mutex
	cache map[syntax.DID]cached
}

type cached struct {
	id  *iidentity.Identity
	exp time.Time
}

const maxDocBytes = 256 << 10

// ResolveDID returns the identity (keys, services, declared handle) of did.
// refresh bypasses the cache.
func (r *Resolver) ResolveDID(ctx context.Context, did syntax.DID, refresh bool) (*iidentity.Identity, error) {
	if !refresh {
		r.mu.Lock()
		c, ok := r.cache[did]
		r.mu.Unlock()
		if ok && time.Now().Before(c.exp) {
			return c.id, nil
		}
	}
	var raw []byte
	switch did.Method() {
	case "plc":
		if r.PLC == nil {
			return nil, fmt.Errorf("%w: no PLC directory", ErrInvalidDID)
		}
		doc, err := r.PLC.Resolve(ctx, did)
		if err != nil {
			return nil, err
		}
		if raw, err = json.Marshal(doc); err != nil {
			return nil, err
		}
	case "web":
		host := strings.TrimPrefix(did.String(), "did:web:")
		if strings.Contains(host, ":") || host == "" {
			return nil, fmt.Errorf("%w: did:web with a port or path is not supported", ErrInvalidDID)
		}
		u := "https://" + host + "/.well-known/did.json"
		if r.DIDWebURL != nil {
			u = r.DIDWebURL(host)
		}
		b, err := r.get(ctx, u, maxDocBytes)
		if err != nil {
			return nil, err
		}
		raw = b
	default:
		return nil, fmt.Errorf("%w: unsupported DID method %q", ErrInvalidDID, did.Method())
	}
	var doc iidentity.DIDDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%w: DID document of %s: %v", ErrInvalidDID, did, err)
	}
	if doc.DID != did {
		return nil, fmt.Errorf("%w: document of %s has id %s", ErrInvalidDID, did, doc.DID)
	}
	id := iidentity.ParseIdentity(&doc)
	ttl := r.TTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[syntax.DID]cached{}
	}
	if len(r.cache) > 10000 {
		clear(r.cache)
	}
	r.cache[did] = cached{id: &id, exp: time.Now().Add(ttl)}
	r.mu.Unlock()
	return &id, nil
}

// SigningKey returns the #atproto key of did, for service-auth checks.
func (r *Resolver) SigningKey(ctx context.Context, did syntax.DID, refresh bool) (atcrypto.PublicKey, error) {
	id, err := r.ResolveDID(ctx, did, refresh)
	if err != nil {
		return nil, err
	}
	return id.PublicKey()
}

// ServiceEndpoint returns the URL of the service #serviceID in did's
// document.
func (r *Resolver) ServiceEndpoint(ctx context.Context, did syntax.DID, serviceID string) (string, error) {
	id, err := r.ResolveDID(ctx, did, false)
	if err != nil {
		return "", err
	}
	svc, ok := id.Services[serviceID]
	if !ok || svc.URL == "" {
		return "", fmt.Errorf("%w: %s#%s", ErrServiceNotFound, did, serviceID)
	}
	return svc.URL, nil
}

// ResolveHandle finds the DID a handle claims: DNS TXT _atproto.<handle>
// ("did=..."; exactly one), else https://<handle>/.well-known/atproto-did.
// Both are asked at once; DNS wins when both answer.
func (r *Resolver) ResolveHandle(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	handle = handle.Normalize()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type result struct {
		did syntax.DID
		err error
	}
	dnsc, httpc := make(chan result, 1), make(chan result, 1)
	go func() { d, err := r.resolveDNS(ctx, handle); dnsc <- result{d, err} }()
	go func() { d, err := r.resolveWellKnown(ctx, handle); httpc <- result{d, err} }()
	d := <-dnsc
	if d.err == nil {
		return d.did, nil
	}
	h := <-httpc
	if h.err == nil {
		return h.did, nil
	}
	return "", fmt.Errorf("%w: %s (dns: %v; https: %v)", ErrHandleNotFound, handle, d.err, h.err)
}

func (r *Resolver) resolveDNS(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	dns := r.DNS
	if dns == nil {
		dns = net.DefaultResolver
	}
	txts, err := dns.LookupTXT(ctx, "_atproto."+handle.String())
	if err != nil {
		return "", err
	}
	var found []string
	for _, t := range txts {
		if v, ok := strings.CutPrefix(t, "did="); ok {
			found = append(found, strings.TrimSpace(v))
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%d did= TXT records", len(found))
	}
	return syntax.ParseDID(found[0])
}

func (r *Resolver) resolveWellKnown(ctx context.Context, handle syntax.Handle) (syntax.DID, error) {
	u := "https://" + handle.String() + "/.well-known/atproto-did"
	if r.WellKnownURL != nil {
		u = r.WellKnownURL(handle)
	}
	b, err := r.get(ctx, u, 2048)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return syntax.ParseDID(strings.TrimSpace(line))
}

// get fetches a small document, refusing large or non-200 answers.
func (r *Resolver) get(ctx context.Context, u string, limit int64) ([]byte, error) {
	hc := r.HTTP
	if hc == nil {
		hc = NewSafeClient(10*time.Second, false)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: answer over %d bytes", u, limit)
	}
	return b, nil
}
