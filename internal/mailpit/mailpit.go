// Package mailpit runs a real Mailpit SMTP server for tests and reads the
// delivered mail through its HTTP API. It imports nothing of the server, so
// any package's tests may use it.
package mailpit

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Version is the Mailpit that .ci/run installs.
const Version = "v1.33.1"

// Server is a real Mailpit SMTP server on 127.0.0.1, started by a test
// and read through its HTTP API. Stop and Start simulate an SMTP outage:
// it comes back on the same ports.
type Server struct {
	// SMTPAddr is host:port of its SMTP listener.
	SMTPAddr string
	// APIURL is the base URL of its HTTP API.
	APIURL string

	t    testing.TB
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Find returns the Mailpit binary: $MAILPIT, then PATH, then
// $(go env GOPATH)/bin. When it is missing the test fails under CI (CI=true,
// where .ci/run installs it) and is skipped elsewhere.
func Find(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MAILPIT"); p != "" {
		return p
	}
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "mailpit")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "mailpit not found: install it with `go install github.com/axllent/mailpit@" + Version + "` (.ci/run does)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Options are extra settings of a Mailpit.
type Options struct {
	// Args are more command-line flags (TLS, authentication).
	Args []string
	// Stopped leaves it stopped: the test calls Start later.
	Stopped bool
}

// Start starts Mailpit on free ports of 127.0.0.1 and stops it when
// the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Find(t)
	m := &Server{
		t:        t,
		bin:      bin,
		SMTPAddr: freeAddr(t),
	}
	httpAddr := freeAddr(t)
	m.APIURL = "http://" + httpAddr
	m.args = append([]string{
		"--smtp", m.SMTPAddr,
		"--listen", httpAddr,
		"--database", filepath.Join(t.TempDir(), "mailpit.db"),
		"--disable-version-check",
		"--smtp-disable-rdns",
		"--quiet",
	}, opts.Args...)
	t.Cleanup(m.Stop)
	if !opts.Stopped {
		m.Start()
	}
	return m
}

// freeAddr reserves a free port of 127.0.0.1 and releases it for the child.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Start starts Mailpit (again) and waits until its API answers and its SMTP
// port accepts connections.
func (m *Server) Start() {
	m.t.Helper()
	if m.cmd != nil {
		return
	}
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("starting mailpit: %v", err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-m.done:
			m.cmd = nil
			m.t.Fatalf("mailpit exited at startup (%s)", cmd.ProcessState)
		default:
		}
		if m.ready() {
			return
		}
		if time.Now().After(deadline) {
			m.Stop()
			m.t.Fatal("mailpit did not become ready in 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *Server) ready() bool {
	c, err := net.DialTimeout("tcp", m.SMTPAddr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	resp, err := http.Get(m.APIURL + "/livez")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop stops Mailpit; its SMTP port refuses connections until Start.
func (m *Server) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Address is a sender or recipient in Mailpit's API.
type Address struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// Message is one delivered message as Mailpit parsed it.
type Message struct {
	ID      string    `json:"ID"`
	From    Address   `json:"From"`
	To      []Address `json:"To"`
	Subject string    `json:"Subject"`
	Text    string    `json:"Text"`
	HTML    string    `json:"HTML"`
}

// Messages returns every delivered message, newest first, with bodies.
func (m *Server) Messages() []Message {
	m.t.Helper()
	var list struct {
		Messages []struct {
			ID string `json:"ID"`
		} `json:"messages"`
	}
	m.getJSON("/api/v1/messages?limit=1000", &list)
	out := make([]Message, 0, len(list.Messages))
	for _, s := range list.Messages {
		var msg Message
		m.getJSON("/api/v1/message/"+s.ID, &msg)
		out = append(out, msg)
	}
	return out
}

// WaitMessage waits up to timeout for a message to `to` whose subject
// contains subject, and returns the newest such.
func (m *Server) WaitMessage(to, subject string, timeout time.Duration) Message {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, msg := range m.Messages() {
			if strings.Contains(msg.Subject, subject) && len(msg.To) == 1 && strings.EqualFold(msg.To[0].Address, to) {
				return msg
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("no mail to %s with subject %q within %v", to, subject, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DeleteAll deletes every delivered message.
func (m *Server) DeleteAll() {
	m.t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, m.APIURL+"/api/v1/messages", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatalf("mailpit: deleting messages: %v", err)
	}
	resp.Body.Close()
}

func (m *Server) getJSON(path string, v any) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatalf("mailpit API %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.t.Fatalf("mailpit API %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		m.t.Fatalf("mailpit API %s: %v", path, fmt.Errorf("decoding: %w", err))
	}
}
