package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestGracefulShutdown: on SIGTERM, `pds serve` tells firehose consumers
// it is going away (close 1001, so relays reconnect later), finishes a
// request still being received, and exits 0.
func TestGracefulShutdown(t *testing.T) {
	bin := buildPDS(t)
	const addr = "127.0.0.1:3220"
	var out lockedBuffer
	srv := exec.Command(bin, "serve")
	srv.Env = append(os.Environ(), "PDS_HOSTNAME=localhost", "PDS_PORT=3220", "PDS_DATA_DIRECTORY="+filepath.Join(t.TempDir(), "data"),
		"PDS_DID_PLC_URL=http://127.0.0.1:1", "PDS_CRAWLERS=http://127.0.0.1:9", "LOG_LEVEL=warn")
	srv.Stdout, srv.Stderr = &out, &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		if t.Failed() {
			t.Logf("pds:\n%s", out.String())
		}
	})
	waitTCP(t, addr, 20*time.Second)

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/xrpc/com.atproto.sync.subscribeRepos", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// A request whose body is still arriving when SIGTERM comes.
	pr, pw := io.Pipe()
	type result struct {
		status int
		body   map[string]any
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/xrpc/com.atproto.server.createSession", "application/json", pr)
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		slow <- result{status: resp.StatusCode, body: body}
	}()
	_, _ = pw.Write([]byte(`{"identifier":"alice.test",`))
	time.Sleep(300 * time.Millisecond)
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("firehose consumer: %v, want close 1001", err)
		}
		break
	}

	time.Sleep(500 * time.Millisecond)
	_, _ = pw.Write([]byte(`"password":"not-the-password"}`))
	_ = pw.Close()
	r := <-slow
	if r.err != nil || r.status >= 500 || r.body["error"] == nil {
		t.Fatalf("in-flight request: %+v", r)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit 20 s after SIGTERM")
	}
}
