package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fixed ports (ops range 3200-3299): Pebble validates challenges on the
// ports named in its configuration.
const (
	pebbleACME  = "127.0.0.1:3210"
	pebbleMgmt  = "127.0.0.1:3211"
	tlsTestPort = "3212" // HTTPS of the PDS, Pebble's tlsPort
	tlsHTTPPort = "3213" // HTTP of the PDS, Pebble's httpPort
	tlsDNSAddr  = "127.0.0.1:3214"
	tlsHost     = "pds.test" // autocert wants at least two labels
)

// loopbackDNS is a DNS server over TCP (as Pebble's -dnsserver asks) that
// answers every A question with 127.0.0.1 and everything else with no
// records: Pebble resolves the test's hostname through it.
func loopbackDNS(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var l [2]byte
					if _, err := io.ReadFull(c, l[:]); err != nil {
						return
					}
					q := make([]byte, int(l[0])<<8|int(l[1]))
					if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
						return
					}
					i := 12
					for i < len(q) && q[i] != 0 {
						i += int(q[i]) + 1
					}
					if i+5 > len(q) {
						return
					}
					qtype := int(q[i+1])<<8 | int(q[i+2])
					question := q[12 : i+5]
					resp := []byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}
					resp = append(resp, question...)
					if qtype == 1 { // A
						resp[7] = 1
						resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
					}
					out := append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...)
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// findTool returns the path of an installed tool (PATH or GOPATH/bin).
// Missing, it fails the test in CI (.ci/run installs it) and skips it
// elsewhere.
func findTool(t *testing.T, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	out, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(string(bytes.TrimSpace(out)), "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (.ci/run installs it: %s)", name, install)
	}
	t.Skipf("%s is not installed; install it with: %s", name, install)
	return ""
}

// buildPDS builds this command into dir once per test.
func buildPDS(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pds")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// selfSignedCA writes a CA certificate that is also the server
// certificate of 127.0.0.1 and localhost (Pebble's own HTTPS).
func selfSignedCA(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ops test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	pool = x509.NewCertPool()
	c, _ := x509.ParseCertificate(der)
	pool.AddCert(c)
	return certFile, keyFile, pool
}

// lockedBuffer collects a process's output safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitTCP(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAutocertWithPebble: `pds serve` with PDS_TLS=autocert gets a
// certificate from a real ACME server (Pebble on 127.0.0.1), serves HTTPS
// with it, redirects HTTP to HTTPS, caches the certificate in the data
// directory, and exits cleanly on SIGTERM.
func TestAutocertWithPebble(t *testing.T) {
	pebble := findTool(t, "pebble", "go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1")
	dir := t.TempDir()
	caFile, keyFile, caPool := selfSignedCA(t, dir)
	conf := fmt.Sprintf(`{"pebble":{"listenAddress":%q,"managementListenAddress":%q,"certificate":%q,"privateKey":%q,
		"httpPort":%s,"tlsPort":%s,"ocspResponderURL":"","externalAccountBindingRequired":false,
		"retryAfter":{"authz":1,"order":1},"keyAlgorithm":"ecdsa",
		"profiles":{"default":{"description":"default","validityPeriod":7776000}}}}`,
		pebbleACME, pebbleMgmt, caFile, keyFile, tlsHTTPPort, tlsTestPort)
	confFile := filepath.Join(dir, "pebble.json")
	_ = os.WriteFile(confFile, []byte(conf), 0o600)
	var pebbleOut lockedBuffer
	loopbackDNS(t, tlsDNSAddr)
	pc := exec.Command(pebble, "-config", confFile, "-dnsserver", tlsDNSAddr)
	pc.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	pc.Stdout, pc.Stderr = &pebbleOut, &pebbleOut
	if err := pc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pc.Process.Kill()
		_ = pc.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s", pebbleOut.String())
		}
	})
	waitTCP(t, pebbleACME, 20*time.Second)

	bin := buildPDS(t)
	data := filepath.Join(dir, "data")
	var pdsOut lockedBuffer
	srv := exec.Command(bin, "serve")
	srv.Env = append(os.Environ(),
		"PDS_HOSTNAME="+tlsHost, "PDS_DATA_DIRECTORY="+data, "PDS_TLS=autocert",
		"PDS_TLS_HTTPS_ADDRESS=127.0.0.1:"+tlsTestPort, "PDS_TLS_HTTP_ADDRESS=127.0.0.1:"+tlsHTTPPort,
		"PDS_ACME_DIRECTORY_URL=https://"+pebbleACME+"/dir", "PDS_ACME_CA_CERT="+caFile,
		"PDS_DID_PLC_URL=http://127.0.0.1:1", "PDS_CRAWLERS=http://127.0.0.1:9" /* never the public relay */, "LOG_LEVEL=info")
	srv.Stdout, srv.Stderr = &pdsOut, &pdsOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		if t.Failed() {
			t.Logf("pds:\n%s", pdsOut.String())
		}
	})
	waitTCP(t, "127.0.0.1:"+tlsTestPort, 20*time.Second)

	// Pebble issues from a root it makes at startup: trust only that.
	mgmt := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	resp, err := mgmt.Get("https://" + pebbleMgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble root: %q", rootPEM)
	}
	// tlsHost is reached on 127.0.0.1, whatever the system resolver says.
	toLoopback := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: toLoopback, TLSClientConfig: &tls.Config{RootCAs: roots}}}
	// The first handshake makes autocert obtain the certificate (Pebble
	// validates the challenge against this server).
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err = client.Get("https://" + tlsHost + ":" + tlsTestPort + "/xrpc/_health")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS with a Pebble certificate: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("version")) {
		t.Fatalf("health over HTTPS: %d %q", resp.StatusCode, body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if err := leaf.VerifyHostname(tlsHost); err != nil || leaf.Issuer.CommonName == "ops test CA" {
		t.Fatalf("certificate: %v, issuer %s", err, leaf.Issuer)
	}

	// Plain HTTP redirects to HTTPS.
	noFollow := &http.Client{Transport: &http.Transport{DialContext: toLoopback}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get("http://" + tlsHost + ":" + tlsHTTPPort + "/xrpc/_health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(resp.Header.Get("Location"), "https://"+tlsHost) || !strings.HasSuffix(resp.Header.Get("Location"), "/xrpc/_health") {
		t.Fatalf("http: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// The certificate is cached in the data directory, private.
	fi, err := os.Stat(filepath.Join(data, autocertDir, tlsHost))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cached certificate: %v %v", fi, err)
	}

	// SIGTERM: a clean exit.
	_ = srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit 20 s after SIGTERM")
	}
}
