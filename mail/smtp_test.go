package mail

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pdsbox/pds/internal/mailpit"
)

func TestNewSMTPConfig(t *testing.T) {
	tests := []struct {
		url, from string
		wantErr   bool
		want      string // String() of the sender
		implicit  bool
		user      string
		pass      string
	}{
		{url: "smtp://mail.example.com", from: "pds@example.com", want: "smtp://mail.example.com:587"},
		{url: "smtps://mail.example.com", from: "pds@example.com", want: "smtps://mail.example.com:465", implicit: true},
		{url: "smtp://u:p@mail.example.com:2525", from: "PDS <pds@example.com>", want: "smtp://mail.example.com:2525", user: "u", pass: "p"},
		{url: "smtps://user%40example.com:p%3Ass%2F@smtp.example.com:465/", from: "pds@example.com", want: "smtps://smtp.example.com:465", implicit: true, user: "user@example.com", pass: "p:ss/"},
		{url: "smtp://[::1]:25", from: "pds@example.com", want: "smtp://[::1]:25"},
		{url: "smtp:///?sendmail=true", from: "pds@example.com", wantErr: true},
		{url: "http://mail.example.com", from: "pds@example.com", wantErr: true},
		{url: "smtp://mail.example.com:0", from: "pds@example.com", wantErr: true},
		{url: "smtp://mail.example.com:99999", from: "pds@example.com", wantErr: true},
		{url: "smtp://mail.example.com/path", from: "pds@example.com", wantErr: true},
		{url: "smtp://mail.example.com", from: "", wantErr: true},
		{url: "smtp://mail.example.com", from: "not an address", wantErr: true},
		{url: "smtp://u:secret@mail.example.com:bad", from: "pds@example.com", wantErr: true},
		{url: "", from: "pds@example.com", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			s, err := NewSMTP(SMTPConfig{URL: tc.url, From: tc.from})
			if tc.wantErr {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err = %v, want ErrConfig", err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != tc.want || s.implicit != tc.implicit || s.username != tc.user || s.password != tc.pass {
				t.Fatalf("got %s implicit=%v user=%q pass=%q", s, s.implicit, s.username, s.password)
			}
		})
	}
}

func TestMessageValidate(t *testing.T) {
	ok := Message{To: "a@example.com", Subject: "Hi", Text: "body"}
	tests := []struct {
		name string
		edit func(m *Message)
	}{
		{"header injection in subject", func(m *Message) { m.Subject = "Hi\r\nBcc: victim@example.com" }},
		{"LF in subject", func(m *Message) { m.Subject = "Hi\nX: y" }},
		{"empty subject", func(m *Message) { m.Subject = "" }},
		{"long subject", func(m *Message) { m.Subject = strings.Repeat("a", 999) }},
		{"empty body", func(m *Message) { m.Text = "" }},
		{"huge body", func(m *Message) { m.Text = strings.Repeat("a", MaxBodyLength+1) }},
		{"huge html", func(m *Message) { m.HTML = strings.Repeat("a", MaxBodyLength+1) }},
		{"two recipients", func(m *Message) { m.To = "a@example.com, b@example.com" }},
		{"display name", func(m *Message) { m.To = "A <a@example.com>" }},
		{"CRLF in recipient", func(m *Message) { m.To = "a@example.com\r\nBcc: b@example.com" }},
		{"no at", func(m *Message) { m.To = "example.com" }},
		{"long recipient", func(m *Message) { m.To = strings.Repeat("a", 250) + "@example.com" }},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid message: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := ok
			tc.edit(&m)
			if err := m.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestSMTPDeliversToMailpit sends one message in each transport mode to a
// real Mailpit and reads it back through its API.
func TestSMTPDeliversToMailpit(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t)
	tlsArgs := []string{"--smtp-tls-cert", certPath, "--smtp-tls-key", keyPath}
	tests := []struct {
		name   string
		scheme string
		user   string
		args   []string
		pool   *x509.CertPool
		// wantErr: the send must fail (and be retryable or not).
		wantErr       bool
		wantPermanent bool
	}{
		{name: "plain", scheme: "smtp"},
		{name: "STARTTLS required by the server", scheme: "smtp", args: append([]string{"--smtp-require-starttls"}, tlsArgs...), pool: pool},
		{name: "STARTTLS with auth", scheme: "smtp", user: "pds:s3cret", args: append([]string{"--smtp-require-starttls", "--smtp-auth-accept-any"}, tlsArgs...), pool: pool},
		{name: "implicit TLS", scheme: "smtps", args: append([]string{"--smtp-require-tls"}, tlsArgs...), pool: pool},
		{name: "implicit TLS with auth", scheme: "smtps", user: "pds:s3cret", args: append([]string{"--smtp-require-tls", "--smtp-auth-accept-any"}, tlsArgs...), pool: pool},
		{name: "untrusted certificate", scheme: "smtp", args: append([]string{"--smtp-require-starttls"}, tlsArgs...), wantErr: true},
		{name: "recipient refused", scheme: "smtp", args: []string{"--smtp-allowed-recipients", "^nobody@"}, wantErr: true, wantPermanent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mp := mailpit.Start(t, mailpit.Options{Args: tc.args})
			url := tc.scheme + "://" + mp.SMTPAddr
			if tc.user != "" {
				url = tc.scheme + "://" + tc.user + "@" + mp.SMTPAddr
			}
			s, err := NewSMTP(SMTPConfig{
				URL: url, From: "PDS <pds@example.com>", Timeout: 10 * time.Second,
				TLS: &tls.Config{RootCAs: tc.pool},
			})
			if err != nil {
				t.Fatal(err)
			}
			m, err := ResetPassword(TokenMail{To: "alice@example.com", Handle: "alice.test", Hostname: "pds.example.com", Token: "ABCDE-FGH23", Expires: time.Now().Add(15 * time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Send(context.Background(), m)
			if tc.wantErr {
				if err == nil {
					t.Fatal("Send succeeded")
				}
				if errors.Is(err, ErrPermanent) != tc.wantPermanent {
					t.Fatalf("Send = %v, permanent %v, want %v", err, errors.Is(err, ErrPermanent), tc.wantPermanent)
				}
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := mp.WaitMessage("alice@example.com", "Password reset requested", 5*time.Second)
			if got.From.Address != "pds@example.com" || got.From.Name != "PDS" {
				t.Errorf("From = %+v", got.From)
			}
			if got.Subject != "Password reset requested (pds.example.com)" {
				t.Errorf("Subject = %q", got.Subject)
			}
			for name, body := range map[string]string{"text": got.Text, "html": got.HTML} {
				if !strings.Contains(body, "ABCDE-FGH23") || !strings.Contains(body, "alice.test") {
					t.Errorf("%s body lacks the token or handle:\n%s", name, body)
				}
			}
		})
	}
}

// TestSMTPRefusesPasswordInClear: credentials are never sent to a remote
// server that offers no STARTTLS.
func TestSMTPRefusesPasswordInClear(t *testing.T) {
	// A fake server that greets and answers EHLO without STARTTLS, and
	// reports everything it received.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		c.Write([]byte("220 fake ESMTP\r\n"))
		buf := make([]byte, 4096)
		var all strings.Builder
		for {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(buf)
			all.Write(buf[:n])
			line := string(buf[:n])
			switch {
			case strings.HasPrefix(strings.ToUpper(line), "EHLO"):
				c.Write([]byte("250-fake\r\n250 AUTH PLAIN LOGIN\r\n"))
			case strings.HasPrefix(strings.ToUpper(line), "QUIT"):
				c.Write([]byte("221 bye\r\n"))
			case n > 0:
				c.Write([]byte("250 ok\r\n"))
			}
			if err != nil {
				got <- all.String()
				return
			}
		}
	}()
	s, err := NewSMTP(SMTPConfig{URL: "smtp://user:hunter2@mail.example.net:25", From: "pds@example.com", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The URL names a remote host; the connection goes to the fake server.
	s.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, l.Addr().String())
	}
	err = s.Send(context.Background(), &Message{To: "a@example.com", Subject: "s", Text: "t"})
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send = %v, want a refusal for want of STARTTLS", err)
	}
	if recv := <-got; strings.Contains(recv, "AUTH") || strings.Contains(recv, "hunter2") || strings.Contains(recv, "aHVudGVyMg") {
		t.Fatalf("the server received credentials:\n%s", recv)
	}
}
