package main

import (
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestMetricsFirehoseBytes: pds_firehose_sent_bytes_total counts the event
// frames consumers received, replayed and live, byte for byte.
func TestMetricsFirehoseBytes(t *testing.T) {
	s := startServer(t, map[string]string{"PDS_METRICS": "true"})
	did, access, _ := s.createAccount(t)
	bytesMetric := func() float64 {
		t.Helper()
		st, text := scrape(t, s.URL+"/metrics", "admin", "admin-secret")
		if st != 200 {
			t.Fatalf("/metrics: %d", st)
		}
		v, ok := metricValue(t, text, "pds_firehose_sent_bytes_total", nil)
		if !ok {
			t.Fatal("no pds_firehose_sent_bytes_total")
		}
		return v
	}
	if v := bytesMetric(); v != 0 {
		t.Fatalf("before any consumer: %v bytes", v)
	}
	for range 2 {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("before")})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	u, _ := url.Parse(s.URL)
	var received int
	read := func(conn *websocket.Conn, upTo int64) {
		t.Helper()
		for n := int64(0); n < upTo; n++ {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			received += len(msg)
		}
	}
	// Two consumers: one replays everything from cursor 0, one follows the live tail only.
	replayer, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer replayer.Close()
	live, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	stored := s.app.events.LastSeq()
	read(replayer, stored)
	deadline := time.Now().Add(5 * time.Second)
	for s.app.events.Subscribers() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("live")})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	read(replayer, 3)
	read(live, 3)
	// A frame counts once its write returned, which may be just after
	// the consumer read it.
	deadline = time.Now().Add(2 * time.Second)
	for {
		v := bytesMetric()
		if v == float64(received) && received > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pds_firehose_sent_bytes_total = %v, consumers received %d bytes", v, received)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
