package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// statusCacheTTL bounds how often reloading the status page makes the
// server probe the network: its checks are not free.
const statusCacheTTL = 30 * time.Second

// statusCache runs one status at a time and keeps the last report.
type statusCache struct {
	mu   sync.Mutex
	last *statusReport
}

func (a *app) cachedStatus(r *http.Request) *statusReport {
	a.statusCache.mu.Lock()
	defer a.statusCache.mu.Unlock()
	if c := a.statusCache.last; c != nil && time.Since(c.Generated) < statusCacheTTL {
		return c
	}
	a.statusCache.last = a.status(r.Context(), a.probe)
	return a.statusCache.last
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Hostname}}: {{.Verdict}}</title>
<style>body{font:15px/1.4 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em}
td,th{padding:.3em .6em;vertical-align:top;text-align:left}.ok{color:#176b2c}.warn{color:#8a5a00}.fail{color:#b00020}
.fix{font-size:90%}</style></head><body>
<h1>{{.Hostname}}</h1>
<p>An atproto Personal Data Server{{if .Handle}} hosting <b>{{.Handle}}</b> ({{.DID}}){{end}}.
Overall: <b class="{{.Verdict}}">{{.Verdict}}</b>, checked {{.Generated.Format "2006-01-02 15:04:05 UTC"}}.</p>
<table><tr><th>check</th><th>verdict</th><th>detail</th></tr>
{{range .Checks}}<tr><td>{{.Name}}</td><td class="{{.Verdict}}">{{.Verdict}}</td><td>{{.Detail}}{{if .Fix}}<div class="fix">Fix: {{.Fix}}</div>{{end}}</td></tr>
{{end}}</table>
<p>Most API routes are under <code>/xrpc/</code>. Code: <a href="https://github.com/pdsbox/pds">pdsbox/pds</a>.</p>
</body></html>
`))

// serveStatusPage is the plain HTML status page at /_pds/ (admin).
func (a *app) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	rep := a.cachedStatus(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = statusPage.Execute(w, struct {
		*statusReport
		Verdict string
	}{rep, rep.Verdict()})
}

// serveStatusJSON is the report for `pds status` (admin), always fresh.
func (a *app) serveStatusJSON(w http.ResponseWriter, r *http.Request) {
	rep := a.status(r.Context(), a.probe)
	a.statusCache.mu.Lock()
	a.statusCache.last = rep
	a.statusCache.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}

// statusCmd: pds status [--json]: ask the running server for its checks.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	data := fs.String("data", "", "data directory (default $PDS_DATA_DIRECTORY or ./data)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(os.Getenv, "", *data)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	req, _ := http.NewRequest(http.MethodGet, localURL(cfg)+opsPrefix+"status", nil)
	req.SetBasicAuth("admin", cfg.AdminPassword)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "pds status: the server does not answer at %s: %v\nfix: start it (pds serve), or pass the same --data/PDS_PORT as the server\n", localURL(cfg), err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(stderr, "pds status: %s: %s\n", resp.Status, b)
		return 1
	}
	var rep statusReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&rep); err != nil {
		fmt.Fprintf(stderr, "pds status: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printStatus(stdout, &rep)
	}
	if rep.Verdict() == verdictFail {
		return 3
	}
	return 0
}

func printStatus(w io.Writer, rep *statusReport) {
	fmt.Fprintf(w, "%s (%s): %s\n", rep.Hostname, rep.PublicURL, rep.Verdict())
	for _, c := range rep.Checks {
		fmt.Fprintf(w, "  [%-4s] %-14s %s\n", c.Verdict, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(w, "         fix: %s\n", c.Fix)
		}
	}
}
