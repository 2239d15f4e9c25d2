package relaye2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/cmd/relay/relay"
	"github.com/bluesky-social/indigo/cmd/relay/relay/models"
	"github.com/bluesky-social/indigo/cmd/relay/stream"
	"github.com/bluesky-social/indigo/cmd/relay/stream/eventmgr"
	"github.com/bluesky-social/indigo/cmd/relay/stream/persist/diskpersist"
	rtest "github.com/bluesky-social/indigo/cmd/relay/testing"
	"github.com/bluesky-social/indigo/util/cliutil"
	"github.com/gorilla/websocket"
	"gorm.io/gorm"
)

// logRecord is one line the relay logged at Warn or above.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string // top-level attributes, by key
	Line  string
}

// logCapture is an slog.Handler that keeps every relay log line (Info and
// up) for the failure report, and the Warn-and-up records for assertions.
type logCapture struct {
	shared *logShared
	attrs  []slog.Attr
	groups []string
}

type logShared struct {
	mu   sync.Mutex
	all  bytes.Buffer
	warn []logRecord
}

func (h *logCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *logCapture) Handle(ctx context.Context, r slog.Record) error {
	var line bytes.Buffer
	var th slog.Handler = slog.NewTextHandler(&line, &slog.HandlerOptions{Level: slog.LevelDebug})
	if len(h.attrs) > 0 {
		th = th.WithAttrs(h.attrs)
	}
	for _, g := range h.groups {
		th = th.WithGroup(g)
	}
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	h.shared.all.Write(line.Bytes())
	if r.Level >= slog.LevelWarn {
		attrs := map[string]string{}
		for _, a := range h.attrs {
			attrs[a.Key] = a.Value.String()
		}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		h.shared.warn = append(h.shared.warn, logRecord{Level: r.Level, Msg: r.Message, Attrs: attrs, Line: string(bytes.TrimSpace(line.Bytes()))})
	}
	return nil
}

func (h *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{shared: h.shared, attrs: append(append([]slog.Attr(nil), h.attrs...), as...), groups: h.groups}
}

func (h *logCapture) WithGroup(name string) slog.Handler {
	return &logCapture{shared: h.shared, attrs: h.attrs, groups: append(append([]string(nil), h.groups...), name)}
}

func (s *logShared) Warnings() []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logRecord(nil), s.warn...)
}

func (s *logShared) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.String()
}

// testRelay is indigo's relay, wired as rtest.MustSimpleRelay wires it but
// listening on 127.0.0.1 only, with the account/host check ON (the stock
// helper turns it off) and a cursor-aware subscribeRepos handler.
type testRelay struct {
	rtest.SimpleRelay
	DB   *gorm.DB
	URL  string // ws://127.0.0.1:PORT
	Logs *logShared
}

// startRelay builds the relay over an in-memory sqlite database and a disk
// persister in a temporary directory. It installs a capturing slog default
// logger (the relay logs through slog.Default) for the test's duration.
func startRelay(t *testing.T, dir identity.Directory) *testRelay {
	t.Helper()
	logs := &logShared{}
	prevLogger := slog.Default()
	slog.SetDefault(slog.New(&logCapture{shared: logs}))

	cfg := relay.DefaultRelayConfig()
	cfg.SkipAccountHostCheck = false // the DID document must point at the subscribed host
	cfg.LenientSyncValidation = false

	db, err := cliutil.SetupDatabase("sqlite://:memory:", 40)
	if err != nil {
		t.Fatal(err)
	}
	persister, err := diskpersist.NewDiskPersistence(t.TempDir(), "", db, diskpersist.DefaultDiskPersistOptions())
	if err != nil {
		t.Fatal(err)
	}
	evtman := eventmgr.NewEventManager(persister)
	r, err := relay.NewRelay(db, evtman, dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	persister.SetUidSource(r)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRelay{
		SimpleRelay: rtest.SimpleRelay{Relay: r, Port: ln.Addr().(*net.TCPAddr).Port},
		DB:          db,
		URL:         "ws://" + ln.Addr().String(),
		Logs:        logs,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xrpc/com.atproto.sync.subscribeRepos", func(w http.ResponseWriter, req *http.Request) {
		var since *int64
		if v := req.URL.Query().Get("cursor"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				http.Error(w, "bad cursor", http.StatusBadRequest)
				return
			}
			since = &n
		}
		if err := r.HandleSubscribeRepos(w, req, since, "127.0.0.1"); err != nil {
			slog.Error("test relay subscribeRepos", "err", err)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		_ = srv.Close()
		_ = r.Slurper.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = evtman.Shutdown(ctx)
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
		slog.SetDefault(prevLogger)
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	return tr
}

// SubscribeFrom makes the relay follow host (localhost:PORT, ws://) from
// just after seq cursor, as a relay resuming a known host does: the host row
// is created with that cursor first, then the admin path subscribes to it.
// (A brand-new host is followed from "now", with no cursor, which would race
// with the test's first writes.)
func (tr *testRelay) SubscribeFrom(t *testing.T, host string, cursor int64) {
	t.Helper()
	row := models.Host{
		Hostname:     host,
		NoSSL:        true,
		Status:       models.HostStatusActive,
		AccountLimit: tr.Relay.Config.DefaultRepoLimit,
		LastSeq:      cursor,
	}
	if err := tr.DB.Create(&row).Error; err != nil {
		t.Fatal(err)
	}
	if err := tr.Relay.SubscribeToHost(context.Background(), host, true, true); err != nil {
		t.Fatalf("SubscribeToHost(%s): %v", host, err)
	}
}

// collector follows a subscribeRepos stream and keeps every frame decoded.
type collector struct {
	name   string
	conn   *websocket.Conn
	mu     sync.Mutex
	events []*stream.XRPCStreamEvent
	err    error
	done   chan struct{}
}

func collect(t *testing.T, name, wsURL string, cursor int64) *collector {
	t.Helper()
	u := fmt.Sprintf("%s/xrpc/com.atproto.sync.subscribeRepos?cursor=%d", wsURL, cursor)
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("%s: dialing %s: %v", name, u, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%s: status %d", name, resp.StatusCode)
	}
	c := &collector{name: name, conn: conn, done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.Close)
	return c
}

func (c *collector) run() {
	defer close(c.done)
	for {
		_, msg, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		var ev stream.XRPCStreamEvent
		if err := ev.Deserialize(bytes.NewReader(msg)); err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("decoding frame %d: %w", len(c.events), err)
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.events = append(c.events, &ev)
		c.mu.Unlock()
	}
}

func (c *collector) Close() {
	_ = c.conn.Close()
	<-c.done
}

// Events returns a copy of the frames received so far and the error that
// ended the stream, if it has ended.
func (c *collector) Events() ([]*stream.XRPCStreamEvent, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*stream.XRPCStreamEvent(nil), c.events...), c.err
}

// WaitFor polls until done(events) holds or timeout passes; it returns the
// events either way and whether done held.
func (c *collector) WaitFor(timeout time.Duration, done func([]*stream.XRPCStreamEvent) bool) ([]*stream.XRPCStreamEvent, bool) {
	deadline := time.Now().Add(timeout)
	for {
		evs, err := c.Events()
		if done(evs) {
			return evs, true
		}
		if err != nil || time.Now().After(deadline) {
			return evs, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
