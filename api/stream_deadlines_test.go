package api

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamDeadlines: behind a server with short whole-request timeouts, a
// streamed response to a live reader outlasts them, while a reader that
// stops reading, and a body that stops arriving, are cut after the idle
// time.
func TestStreamDeadlines(t *testing.T) {
	const idle = 300 * time.Millisecond
	result := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /out", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		var err error
		for i := 0; i < 320 && err == nil; i++ { // 20 MB, over socket buffers
			_, err = w.Write(chunk)
			if r.URL.Query().Get("slow") != "" {
				time.Sleep(10 * time.Millisecond)
			}
		}
		result <- err
	})
	mux.HandleFunc("POST /in", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		result <- err
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: streamDeadlinesIdle(idle)(mux), ReadTimeout: time.Second, WriteTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	host := ln.Addr().String()

	wait := func(what string, wantErr bool, within time.Duration) {
		t.Helper()
		select {
		case err := <-result:
			if (err != nil) != wantErr {
				t.Fatalf("%s: handler err %v, want error %v", what, err, wantErr)
			}
		case <-time.After(within):
			t.Fatalf("%s: handler still blocked after %v", what, within)
		}
	}

	// A live reader taking ~3.2 s, longer than WriteTimeout: served whole.
	resp, err := http.Get("http://" + host + "/out?slow=1")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 320*64<<10 {
		t.Fatalf("live reader got %d bytes", n)
	}
	wait("live reader", false, 5*time.Second)

	// A reader that never reads: cut after idle, not after WriteTimeout.
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	start := time.Now()
	io.WriteString(c, "GET /out HTTP/1.1\r\nHost: x\r\n\r\n")
	wait("stalled reader", true, 3*time.Second)
	t.Logf("stalled reader cut after %v", time.Since(start).Round(time.Millisecond))

	// A body that stops arriving: cut after idle.
	b, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	io.WriteString(b, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("a", 1000))
	wait("stalled body", true, 3*time.Second)
}
