package relaye2e

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pdsBin is the server binary under test: built once by TestMain from the
// main module, exactly as it ships (CGO_ENABLED=0), unless PDS_BIN names a
// prebuilt one.
var pdsBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "pds-relay-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if pdsBin = os.Getenv("PDS_BIN"); pdsBin == "" {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pdsBin = filepath.Join(tmp, "pds")
		start := time.Now()
		// Built in the main module's own context (GOWORK=off): the binary
		// gets the main module's dependency versions, not this module's.
		cmd := exec.Command("go", "build", "-o", pdsBin, "./cmd/pds")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the pds binary in %s: %v\n%s", root, err, out)
			return 1
		}
		fmt.Fprintf(os.Stderr, "built %s in %s\n", pdsBin, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// checkCgoFree fails the test unless the binary was built with CGO_ENABLED=0.
func checkCgoFree(t *testing.T, bin string) {
	t.Helper()
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("reading build info of %s: %v", bin, err)
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" {
			if s.Value != "0" {
				t.Fatalf("%s was built with CGO_ENABLED=%s", bin, s.Value)
			}
			return
		}
	}
	t.Fatalf("%s: no CGO_ENABLED in its build settings", bin)
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pdsProcess is our server running as a subprocess on 127.0.0.1:port,
// whose public URL is http://localhost:port.
type pdsProcess struct {
	t       *testing.T
	port    int
	env     []string
	Host    string // "localhost:PORT": the name the relay subscribes to
	URL     string // public URL, the DID document's atproto_pds endpoint
	base    string // where the test talks to it: http://127.0.0.1:PORT
	WS      string // its firehose base: ws://127.0.0.1:PORT
	logs    lockedBuffer
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newPDS prepares (but does not start) a server with a fresh data
// directory, using plcURL as its PLC directory.
func newPDS(t *testing.T, plcURL string) *pdsProcess {
	t.Helper()
	checkCgoFree(t, pdsBin)
	port := freePort(t)
	p := &pdsProcess{
		t:    t,
		port: port,
		Host: "localhost:" + strconv.Itoa(port),
		URL:  "http://localhost:" + strconv.Itoa(port),
		base: "http://127.0.0.1:" + strconv.Itoa(port),
		WS:   "ws://127.0.0.1:" + strconv.Itoa(port),
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PDS_") && !strings.HasPrefix(kv, "LOG_LEVEL=") {
			p.env = append(p.env, kv)
		}
	}
	p.env = append(p.env,
		"PDS_HOSTNAME=localhost",
		"PDS_PORT="+strconv.Itoa(port),
		"PDS_LISTEN_ADDRESS=127.0.0.1:"+strconv.Itoa(port),
		"PDS_DATA_DIRECTORY="+t.TempDir(),
		"PDS_DID_PLC_URL="+plcURL,
		"PDS_SERVICE_HANDLE_DOMAINS=.test",
		"PDS_INVITE_REQUIRED=false",
		"PDS_ADMIN_PASSWORD=relay-e2e-admin",
		"LOG_LEVEL=warn",
	)
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pds output:\n%s", p.logs.String())
		}
	})
	return p
}

// RaiseSeq runs `pds seq raise n` (the server must be stopped).
func (p *pdsProcess) RaiseSeq(n int64) {
	p.t.Helper()
	cmd := exec.Command(pdsBin, "seq", "raise", strconv.FormatInt(n, 10))
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("pds seq raise %d: %v\n%s", n, err, out)
	}
}

// Start runs `pds serve` and waits until it answers /xrpc/_health.
func (p *pdsProcess) Start() {
	p.t.Helper()
	p.cmd = exec.Command(pdsBin, "serve")
	p.cmd.Env = p.env
	p.cmd.Stdout = &p.logs
	p.cmd.Stderr = &p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("starting pds: %v", err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		p.waitErr = cmd.Wait()
		close(exited)
	}(p.cmd, p.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-p.exited:
			p.t.Fatalf("pds exited during startup (%v):\n%s", p.waitErr, p.logs.String())
		default:
		}
		resp, err := http.Get(p.base + "/xrpc/_health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("pds not healthy after 15s (last error %v):\n%s", err, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 20s).
func (p *pdsProcess) Stop() {
	if p.cmd == nil {
		return
	}
	defer func() { p.cmd = nil }()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			p.t.Errorf("pds exited with %v after SIGTERM", p.waitErr)
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("pds did not stop within 20s of SIGTERM")
	}
}

// Call does one XRPC request and returns the decoded JSON answer, failing
// the test unless the status is 200. body is nil, raw []byte (sent with
// contentType), or a value sent as JSON.
func (p *pdsProcess) Call(method, nsid, token, query string, body any, contentType string) map[string]any {
	p.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			p.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
		contentType = "application/json"
	}
	u := p.base + "/xrpc/" + nsid
	if query != "" {
		u += "?" + query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s: %v", nsid, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("%s: reading answer: %v", nsid, err)
	}
	if resp.StatusCode != http.StatusOK {
		p.t.Fatalf("%s: status %d: %s", nsid, resp.StatusCode, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		p.t.Fatalf("%s: answer is not JSON: %q", nsid, raw)
	}
	return out
}
