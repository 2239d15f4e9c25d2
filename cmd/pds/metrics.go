package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pdsbox/pds/blobstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"
)

// maxMethodLabels bounds the distinct XRPC method names metrics keep:
// unknown methods are proxied, so a client could otherwise invent labels
// without end. Methods past the bound count as "other".
const maxMethodLabels = 300

// metrics are the server's Prometheus metrics, in their own registry (no
// process-wide default), served in text format by handler.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	commits  prometheus.Counter
	events   prometheus.Counter

	mu      sync.Mutex
	methods map[string]bool
}

func newMetrics(a *app) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), methods: map[string]bool{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pds_http_requests_total", Help: "HTTP requests by XRPC method (or path class) and status code.",
	}, []string{"method", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "pds_http_request_duration_seconds", Help: "Time to the end of the response, by XRPC method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"method"})
	m.commits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pds_repo_commits_total", Help: "Successful repository writes (createRecord, putRecord, deleteRecord, applyWrites, importRepo).",
	})
	m.events = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pds_firehose_events_total", Help: "Events delivered to the live firehose.",
	})
	m.reg.MustRegister(m.requests, m.latency, m.commits, m.events,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pds_firehose_last_seq", Help: "Newest firehose seq."},
			func() float64 { return float64(a.events.LastSeq()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pds_firehose_subscribers", Help: "Consumers following the live firehose."},
			func() float64 { return float64(a.events.Subscribers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pds_firehose_sent_bytes_total", Help: "Bytes of event frames sent to firehose consumers (replay and live)."},
			func() float64 { return float64(a.events.BytesSent()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pds_bbolt_size_bytes", Help: "Size of the bbolt database file."},
			func() float64 {
				var n int64
				_ = a.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
				return float64(n)
			}),
		blobCollector{a},
		crawlCollector{a},
	)
	return m
}

// blobCollector reports the blob count and bytes at scrape time.
type blobCollector struct{ a *app }

var (
	descBlobBytes = prometheus.NewDesc("pds_blob_bytes", "Bytes of stored blobs (referenced or not).", nil, nil)
	descBlobCount = prometheus.NewDesc("pds_blobs", "Stored blobs (referenced or not).", nil, nil)
	descCrawlOK   = prometheus.NewDesc("pds_crawl_requests_total", "requestCrawl outcomes per relay.", []string{"relay", "result"}, nil)
	descCrawlLast = prometheus.NewDesc("pds_crawl_last_success_timestamp_seconds", "When each relay last accepted requestCrawl (0: never).", []string{"relay"}, nil)
)

func (c blobCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descBlobBytes; ch <- descBlobCount }
func (c blobCollector) Collect(ch chan<- prometheus.Metric) {
	var entries []blobstore.Entry
	if err := c.a.db.View(func(tx *bolt.Tx) error {
		var err error
		entries, err = blobstore.ListIn(tx)
		return err
	}); err != nil {
		return
	}
	var total int64
	for _, e := range entries {
		total += e.Size
	}
	ch <- prometheus.MustNewConstMetric(descBlobBytes, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(descBlobCount, prometheus.GaugeValue, float64(len(entries)))
}

// crawlCollector reports the crawler's outcomes per relay.
type crawlCollector struct{ a *app }

func (c crawlCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCrawlOK; ch <- descCrawlLast }
func (c crawlCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.a.crawler.Status() {
		ch <- prometheus.MustNewConstMetric(descCrawlOK, prometheus.CounterValue, float64(st.OK), st.URL, "ok")
		ch <- prometheus.MustNewConstMetric(descCrawlOK, prometheus.CounterValue, float64(st.Failed), st.URL, "failed")
		last := 0.0
		if !st.LastOK.IsZero() {
			last = float64(st.LastOK.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(descCrawlLast, prometheus.GaugeValue, last, st.URL)
	}
}

// handler serves the metrics in Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

var commitMethods = map[string]bool{
	"com.atproto.repo.createRecord": true, "com.atproto.repo.putRecord": true, "com.atproto.repo.deleteRecord": true,
	"com.atproto.repo.applyWrites": true, "com.atproto.repo.importRepo": true,
}

// label names a request for metrics: its XRPC method, or a class of path.
func (m *metrics) label(path string) string {
	nsid, ok := strings.CutPrefix(path, "/xrpc/")
	switch {
	case !ok && strings.HasPrefix(path, "/.well-known/"):
		return "well-known"
	case !ok:
		return "other-path"
	}
	if len(nsid) > 128 || strings.ContainsAny(nsid, "/ ") {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.methods[nsid] {
		if len(m.methods) >= maxMethodLabels {
			return "other"
		}
		m.methods[nsid] = true
	}
	return nsid
}

// instrument counts and times every request handled by next.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		method := m.label(r.URL.Path)
		m.requests.WithLabelValues(method, strconv.Itoa(sw.status)).Inc()
		m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
		if sw.status == http.StatusOK && commitMethods[method] {
			m.commits.Inc()
		}
	})
}

// statusWriter records the status code; it passes Flush and Hijack
// (the firehose upgrades to a websocket) through via Unwrap.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over (websocket upgrades); the request
// counts as 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be hijacked")
	}
	w.status, w.wrote = http.StatusSwitchingProtocols, true
	return h.Hijack()
}

// Flush sends buffered data (streamed CARs and blobs).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
