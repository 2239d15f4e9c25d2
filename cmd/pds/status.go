package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/identity"
)

// Verdicts of a status check.
const (
	verdictOK   = "ok"
	verdictWarn = "warn"
	verdictFail = "fail"
)

// check is one answer to an operator's question: a verdict, what was
// seen, and what to do when it is not ok.
type check struct {
	Name    string `json:"name"`
	Verdict string `json:"verdict"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix,omitempty"`
}

// statusReport is what `pds status` and the page at /_pds/ show.
type statusReport struct {
	Generated time.Time `json:"generated"`
	Hostname  string    `json:"hostname"`
	PublicURL string    `json:"publicUrl"`
	DID       string    `json:"did,omitempty"`
	Handle    string    `json:"handle,omitempty"`
	Checks    []check   `json:"checks"`
}

// Verdict is the worst verdict of the report.
func (r *statusReport) Verdict() string {
	v := verdictOK
	for _, c := range r.Checks {
		if c.Verdict == verdictFail {
			return verdictFail
		}
		if c.Verdict == verdictWarn {
			v = verdictWarn
		}
	}
	return v
}

// statusProbe reaches the network for the checks; tests point every part
// at 127.0.0.1.
type statusProbe struct {
	HTTP *http.Client
	DNS  identity.TXTResolver
	// WellKnownURL maps a handle to its atproto-did URL.
	WellKnownURL func(handle string) string
	// HealthURL is fetched to prove the public URL answers over HTTPS.
	HealthURL string
	// Timeout bounds each network check.
	Timeout time.Duration
	// MinFree is the free space under which disk checks fail (warn under 10x).
	MinFree uint64
}

// defaultStatusProbe is the production probe: public DNS and HTTPS, with
// short timeouts, through cfg.Dial when set.
func defaultStatusProbe(cfg *config) *statusProbe {
	hc := &http.Client{Timeout: 5 * time.Second}
	var dns identity.TXTResolver = net.DefaultResolver
	if cfg.Dial != nil {
		hc = httpClientWith(cfg.Dial, 5*time.Second)
		dns = resolverWith(cfg.Dial)
	}
	return &statusProbe{
		HTTP:         hc,
		DNS:          dns,
		WellKnownURL: func(h string) string { return "https://" + h + "/.well-known/atproto-did" },
		HealthURL:    cfg.PublicURL + "/xrpc/_health",
		Timeout:      3 * time.Second,
		MinFree:      100 << 20,
	}
}

// status runs every check, the network ones concurrently, each bounded by
// the probe's timeout.
func (a *app) status(ctx context.Context, p *statusProbe) *statusReport {
	rep := &statusReport{Generated: time.Now().UTC(), Hostname: a.cfg.Hostname, PublicURL: a.cfg.PublicURL}
	var did syntax.DID
	var handle, rev string
	if r, err := a.accounts.Repo(); err == nil {
		did = r.DID()
		_, rev, _ = r.Head()
		if acct, err := a.auth.Account(ctx); err == nil {
			handle = acct.Handle.String()
		}
		rep.DID, rep.Handle = did.String(), handle
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	add := func(c ...check) {
		mu.Lock()
		rep.Checks = append(rep.Checks, c...)
		mu.Unlock()
	}
	run := func(f func(ctx context.Context) []check) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, p.Timeout)
			defer cancel()
			add(f(cctx)...)
		}()
	}
	if did == "" {
		add(check{Name: "account", Verdict: verdictFail, Detail: "no account on this server",
			Fix: "create it: pds account create --handle <handle> --password <password>"})
	} else {
		add(check{Name: "account", Verdict: verdictOK, Detail: fmt.Sprintf("%s (%s) at rev %s", handle, did, rev)})
		run(func(ctx context.Context) []check { return []check{a.checkHandle(ctx, p, handle, did)} })
		run(func(ctx context.Context) []check { return []check{a.checkDIDDoc(ctx, did)} })
		for _, relay := range a.cfg.Crawlers {
			run(func(ctx context.Context) []check { return a.checkRelay(ctx, p, relay, did, rev) })
		}
	}
	run(func(ctx context.Context) []check { return []check{a.checkHTTPS(ctx, p)} })
	add(a.checkCrawlers()...)
	add(a.checkDisk(p)...)
	add(check{Name: "firehose", Verdict: verdictOK,
		Detail: fmt.Sprintf("head seq %d, %d live subscribers", a.events.LastSeq(), a.events.Subscribers())})
	wg.Wait()
	order := map[string]int{"account": 0, "handle": 1, "did-document": 2, "https": 3}
	sortChecks(rep.Checks, order)
	return rep
}

func sortChecks(cs []check, order map[string]int) {
	rank := func(c check) int {
		if r, ok := order[c.Name]; ok {
			return r
		}
		return 10
	}
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && (rank(cs[j]) < rank(cs[j-1]) || (rank(cs[j]) == rank(cs[j-1]) && cs[j].Name < cs[j-1].Name)); j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// checkHandle: does the handle resolve to our DID, by DNS TXT or by
// /.well-known/atproto-did?
func (a *app) checkHandle(ctx context.Context, p *statusProbe, handle string, did syntax.DID) check {
	c := check{Name: "handle"}
	type res struct {
		got string
		err error
	}
	dnsc, httpc := make(chan res, 1), make(chan res, 1)
	go func() {
		txts, err := p.DNS.LookupTXT(ctx, "_atproto."+handle)
		var found []string
		for _, t := range txts {
			if v, ok := strings.CutPrefix(t, "did="); ok {
				found = append(found, strings.TrimSpace(v))
			}
		}
		if err == nil && len(found) != 1 {
			err = fmt.Errorf("%d did= TXT records", len(found))
		}
		r := res{err: err}
		if err == nil {
			r.got = found[0]
		}
		dnsc <- r
	}()
	go func() {
		body, err := fetchSmall(ctx, p.HTTP, p.WellKnownURL(handle), 2048)
		line, _, _ := strings.Cut(string(body), "\n")
		httpc <- res{got: strings.TrimSpace(line), err: err}
	}()
	d, h := <-dnsc, <-httpc
	dnsOK, httpOK := d.err == nil && d.got == did.String(), h.err == nil && h.got == did.String()
	describe := func(how string, r res) string {
		if r.err != nil {
			return how + ": " + r.err.Error()
		}
		return how + ": " + r.got
	}
	c.Detail = describe("DNS TXT _atproto."+handle, d) + "; " + describe("https://"+handle+"/.well-known/atproto-did", h)
	switch {
	case (d.err == nil && d.got != did.String()) || (h.err == nil && h.got != did.String()):
		c.Verdict = verdictFail
		c.Fix = fmt.Sprintf("the handle points to another DID: set the TXT record _atproto.%s to \"did=%s\" (or remove the wrong one)", handle, did)
	case dnsOK || httpOK:
		c.Verdict = verdictOK
	default:
		c.Verdict = verdictFail
		c.Fix = fmt.Sprintf("apps show \"Invalid Handle\": add a DNS TXT record _atproto.%s with value \"did=%s\", or make https://%s reach this server", handle, did, handle)
	}
	return c
}

// checkDIDDoc: does the DID document name our public URL and our key?
func (a *app) checkDIDDoc(ctx context.Context, did syntax.DID) check {
	c := check{Name: "did-document"}
	id, err := a.resolver.ResolveDID(ctx, did, true)
	if err != nil {
		c.Verdict, c.Detail = verdictFail, "resolving "+did.String()+": "+err.Error()
		c.Fix = "check PDS_DID_PLC_URL (did:plc) or that /.well-known/did.json is served (did:web)"
		return c
	}
	pub, err := a.accounts.PublicKey()
	if err != nil {
		c.Verdict, c.Detail = verdictFail, err.Error()
		return c
	}
	docKey, kerr := id.PublicKey()
	endpoint := strings.TrimSuffix(id.PDSEndpoint(), "/")
	c.Detail = fmt.Sprintf("PDS endpoint %s", endpoint)
	switch {
	case endpoint != a.cfg.PublicURL:
		c.Verdict = verdictFail
		c.Fix = fmt.Sprintf("the DID document sends clients to %q instead of %s: update it with a PLC operation (requestPlcOperationSignature, signPlcOperation, submitPlcOperation) or fix PDS_HOSTNAME", endpoint, a.cfg.PublicURL)
	case kerr != nil || docKey.DIDKey() != pub.DIDKey():
		c.Verdict = verdictFail
		c.Fix = "the DID document's atproto key is not this server's signing key: relays will reject every commit; update the document's verification method with a PLC operation"
	default:
		c.Verdict = verdictOK
		c.Detail += ", signing key " + pub.DIDKey()
	}
	return c
}

// checkHTTPS: is the public URL reachable over HTTPS with a valid
// certificate?
func (a *app) checkHTTPS(ctx context.Context, p *statusProbe) check {
	c := check{Name: "https"}
	if !strings.HasPrefix(p.HealthURL, "https://") {
		c.Verdict, c.Detail = verdictWarn, a.cfg.PublicURL+" is not an https URL (a local server)"
		c.Fix = "for a real host set PDS_HOSTNAME to its public DNS name and serve TLS (a reverse proxy, see README)"
		return c
	}
	_, err := fetchSmall(ctx, p.HTTP, p.HealthURL, 4096)
	if err != nil {
		c.Verdict, c.Detail = verdictFail, err.Error()
		c.Fix = "make " + a.cfg.PublicURL + " reach this server over HTTPS with a valid certificate (DNS A/AAAA record, firewall ports 80/443, the proxy's certificate)"
		return c
	}
	c.Verdict, c.Detail = verdictOK, p.HealthURL+" answers with a valid certificate"
	return c
}

// checkCrawlers: when did each relay last accept requestCrawl?
func (a *app) checkCrawlers() []check {
	if len(a.cfg.Crawlers) == 0 {
		return []check{{Name: "crawlers", Verdict: verdictWarn, Detail: "no relay configured (PDS_CRAWLERS)",
			Fix: "set PDS_CRAWLERS=https://bsky.network so the network learns about this server"}}
	}
	var out []check
	for _, st := range a.crawler.Status() {
		c := check{Name: "crawl " + st.URL}
		switch {
		case st.LastErr != "":
			c.Verdict, c.Detail = verdictFail, fmt.Sprintf("last requestCrawl failed at %s: %s", st.LastErrAt.UTC().Format(time.RFC3339), st.LastErr)
			c.Fix = "the relay must reach " + a.cfg.PublicURL + " over HTTPS; it retries with backoff"
			if !st.LastOK.IsZero() {
				c.Detail += fmt.Sprintf(" (last accepted %s)", st.LastOK.UTC().Format(time.RFC3339))
			}
		case st.LastOK.IsZero():
			c.Verdict, c.Detail = verdictWarn, "no requestCrawl sent yet since startup"
		default:
			c.Verdict, c.Detail = verdictOK, "last accepted "+st.LastOK.UTC().Format(time.RFC3339)
		}
		out = append(out, c)
	}
	return out
}

// checkRelay: what does the relay say about this host and this account?
func (a *app) checkRelay(ctx context.Context, p *statusProbe, relay string, did syntax.DID, rev string) []check {
	base := strings.TrimSuffix(relay, "/") + "/xrpc/"
	host := check{Name: "relay host " + relay}
	var hs struct {
		Status       string `json:"status"`
		Seq          *int64 `json:"seq"`
		AccountCount int64  `json:"accountCount"`
	}
	if err := getJSON(ctx, p.HTTP, base+"com.atproto.sync.getHostStatus?hostname="+url.QueryEscape(a.cfg.Hostname), &hs); err != nil {
		host.Verdict, host.Detail = verdictFail, err.Error()
		host.Fix = "the relay does not know this host yet: wait for requestCrawl to be accepted, or run: goat relay admin host add " + a.cfg.Hostname
	} else {
		host.Detail = fmt.Sprintf("status %s", hs.Status)
		if hs.Seq != nil {
			host.Detail += fmt.Sprintf(", seq %d (ours %d)", *hs.Seq, a.events.LastSeq())
		}
		switch {
		case hs.Status != "active":
			host.Verdict, host.Fix = verdictFail, "the relay does not crawl this host ("+hs.Status+"): a throttled or banned host needs the relay operator"
		case hs.Seq != nil && *hs.Seq > a.events.LastSeq():
			host.Verdict, host.Fix = verdictFail, fmt.Sprintf("the relay saw seq %d, above ours: it would ask for a future cursor; stop the server and run: pds seq raise %d", *hs.Seq, *hs.Seq)
		default:
			host.Verdict = verdictOK
		}
	}
	repo := check{Name: "relay repo " + relay}
	var rs struct {
		Active bool   `json:"active"`
		Status string `json:"status"`
		Rev    string `json:"rev"`
	}
	if err := getJSON(ctx, p.HTTP, base+"com.atproto.sync.getRepoStatus?did="+url.QueryEscape(did.String()), &rs); err != nil {
		repo.Verdict, repo.Detail = verdictFail, err.Error()
		repo.Fix = "the relay has not seen this account: make a post, or check the DID document and crawl checks above"
		return []check{host, repo}
	}
	repo.Detail = fmt.Sprintf("active %v, rev %s (ours %s)", rs.Active, rs.Rev, rev)
	switch {
	case !rs.Active:
		repo.Verdict, repo.Fix = verdictFail, "the relay holds the account as "+rs.Status+": if it was deactivated here, activate it; otherwise ask the relay operator"
	case rs.Rev != rev:
		repo.Verdict, repo.Fix = verdictWarn, "the relay is behind this repository: it catches up with the next event; if it stays behind, check the firehose and DID checks"
	default:
		repo.Verdict = verdictOK
	}
	return []check{host, repo}
}

// checkDisk: free space for data and blobs.
func (a *app) checkDisk(p *statusProbe) []check {
	var out []check
	for _, d := range []struct{ name, dir string }{{"disk data", a.cfg.DataDir}, {"disk blobs", a.cfg.BlobDir}} {
		var st syscall.Statfs_t
		c := check{Name: d.name}
		if err := syscall.Statfs(d.dir, &st); err != nil {
			c.Verdict, c.Detail = verdictFail, err.Error()
			out = append(out, c)
			continue
		}
		free := st.Bavail * uint64(st.Bsize)
		total := st.Blocks * uint64(st.Bsize)
		c.Detail = fmt.Sprintf("%s: %.1f GB free of %.1f GB", d.dir, float64(free)/1e9, float64(total)/1e9)
		switch {
		case free < p.MinFree:
			c.Verdict, c.Fix = verdictFail, "writes will fail soon: free space, or move blobs to S3-compatible storage"
		case free < 10*p.MinFree:
			c.Verdict, c.Fix = verdictWarn, "little space left: free some, or move blobs to S3-compatible storage"
		default:
			c.Verdict = verdictOK
		}
		out = append(out, c)
	}
	return out
}

func fetchSmall(ctx context.Context, hc *http.Client, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, nil
}

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	body, err := fetchSmall(ctx, hc, u, 1<<20)
	if err != nil {
		var e struct{ Error, Message string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%w: %s: %s", err, e.Error, e.Message)
		}
		return err
	}
	return json.Unmarshal(body, v)
}
