// Package mail delivers the server's email: a durable outbox in bbolt (a mail
// accepted by the API is sent even if the SMTP server is down at the time or
// the process restarts) and an SMTP client configured the way the reference
// PDS is (PDS_EMAIL_SMTP_URL, PDS_EMAIL_FROM_ADDRESS). It knows nothing of
// HTTP or of the account; the templates build the messages the account
// flows send.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds one delivery attempt: dial, TLS, the whole SMTP
// exchange.
const DefaultTimeout = 30 * time.Second

// Errors of the SMTP configuration and of deliveries.
var (
	// ErrConfig: an SMTP URL or from address that cannot be used.
	ErrConfig = errors.New("invalid email configuration")
	// ErrPermanent marks a delivery the server refused for good (a 5xx
	// reply): the outbox drops the message instead of retrying.
	ErrPermanent = errors.New("permanent delivery failure")
	// ErrInvalidAddress: a recipient that is not one plain address.
	ErrInvalidAddress = errors.New("invalid email address")
	// ErrInvalidMessage: a subject or body out of bounds.
	ErrInvalidMessage = errors.New("invalid email message")
)

// SMTPConfig configures an SMTP sender.
type SMTPConfig struct {
	// URL is PDS_EMAIL_SMTP_URL: smtp://[user:pass@]host[:port] (port 587 by
	// default; STARTTLS whenever the server offers it, and required when
	// credentials are sent to a host other than loopback) or
	// smtps://[user:pass@]host[:port] (implicit TLS, port 465 by default).
	// User and password are percent-decoded.
	URL string
	// From is PDS_EMAIL_FROM_ADDRESS: "addr@example.com" or
	// "Name <addr@example.com>".
	From string
	// Timeout bounds one delivery; zero means DefaultTimeout.
	Timeout time.Duration
	// TLS is the base TLS configuration (its ServerName is set to the
	// host); nil means the system roots. Tests give their own RootCAs.
	TLS *tls.Config
	// HeloName is the name given in EHLO; "" means "localhost", as net/smtp.
	HeloName string
}

// SMTP sends messages to one SMTP server. It is safe for concurrent use;
// each Send is one connection.
type SMTP struct {
	host     string
	port     string
	implicit bool
	username string
	password string
	from     *mail.Address
	timeout  time.Duration
	tls      *tls.Config
	helo     string
	// dial connects; tests replace it to reach a fake server by name.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewSMTP checks cfg and returns a sender. It does not connect.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: PDS_EMAIL_SMTP_URL: %v", ErrConfig, redactURLError(err))
	}
	s := &SMTP{timeout: cfg.Timeout, helo: cfg.HeloName, dial: (&net.Dialer{}).DialContext}
	switch u.Scheme {
	case "smtp":
		s.port = "587"
	case "smtps":
		s.implicit, s.port = true, "465"
	default:
		return nil, fmt.Errorf("%w: PDS_EMAIL_SMTP_URL must start with smtp:// or smtps:// (sendmail is not supported)", ErrConfig)
	}
	s.host = u.Hostname()
	if s.host == "" {
		return nil, fmt.Errorf("%w: PDS_EMAIL_SMTP_URL has no host", ErrConfig)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: PDS_EMAIL_SMTP_URL port %q", ErrConfig, p)
		}
		s.port = p
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: PDS_EMAIL_SMTP_URL takes no path or options", ErrConfig)
	}
	if u.User != nil {
		s.username = u.User.Username()
		s.password, _ = u.User.Password()
	}
	if cfg.From == "" {
		return nil, fmt.Errorf("%w: PDS_EMAIL_FROM_ADDRESS is required with PDS_EMAIL_SMTP_URL", ErrConfig)
	}
	s.from, err = mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("%w: PDS_EMAIL_FROM_ADDRESS: %v", ErrConfig, err)
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.helo == "" {
		s.helo = "localhost"
	}
	if cfg.TLS != nil {
		s.tls = cfg.TLS.Clone()
	} else {
		s.tls = &tls.Config{}
	}
	s.tls.ServerName = s.host
	if s.tls.MinVersion == 0 {
		s.tls.MinVersion = tls.VersionTLS12
	}
	return s, nil
}

// redactURLError keeps url.Parse's reason but not the URL, which may hold
// the SMTP password.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// From is the parsed sender address.
func (s *SMTP) From() *mail.Address { return s.from }

// String names the server without credentials, for logs.
func (s *SMTP) String() string {
	scheme := "smtp"
	if s.implicit {
		scheme = "smtps"
	}
	return scheme + "://" + net.JoinHostPort(s.host, s.port)
}

// Send delivers m in one SMTP session. Errors wrap ErrPermanent when the
// server refused the message for good (5xx), ErrInvalidAddress for a bad
// recipient; any other error is worth a retry.
func (s *SMTP) Send(ctx context.Context, m *Message) error {
	to, err := ParseRecipient(m.To)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	body, err := m.Encode(s.from, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	addr := net.JoinHostPort(s.host, s.port)
	conn, err := s.dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", s, err)
	}
	// The deadline bounds every read and write of the session, and a
	// cancelled context closes the connection under a blocked call.
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	if s.implicit {
		tc := tls.Client(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS with %s: %w", s, err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return s.wrap("greeting", err)
	}
	if err := c.Hello(s.helo); err != nil {
		return s.wrap("EHLO", err)
	}
	if !s.implicit {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(s.tls); err != nil {
				return s.wrap("STARTTLS", err)
			}
		} else if s.username != "" && !isLoopback(s.host) {
			return fmt.Errorf("%s does not offer STARTTLS; refusing to send the password in clear (use smtps://)", s)
		}
	}
	if s.username != "" {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return fmt.Errorf("%s offers no AUTH, but the URL has credentials", s)
		}
		if err := c.Auth(s.auth(mechs)); err != nil {
			return s.wrap("AUTH", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return s.wrap("MAIL FROM", err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return s.wrap("RCPT TO", err)
	}
	w, err := c.Data()
	if err != nil {
		return s.wrap("DATA", err)
	}
	if _, err := w.Write(body); err != nil {
		return s.wrap("DATA", err)
	}
	if err := w.Close(); err != nil {
		return s.wrap("end of DATA", err)
	}
	// The message is accepted; a failing QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// wrap names the SMTP step that failed and marks 5xx replies permanent.
func (s *SMTP) wrap(step string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 && te.Code < 600 {
		return fmt.Errorf("%w: %s at %s: %w", ErrPermanent, s, step, err)
	}
	return fmt.Errorf("%s at %s: %w", s, step, err)
}

// auth picks PLAIN, or LOGIN when the server offers only that (as some
// hosted services do). Both refuse to send the password over a connection
// without TLS unless the server is on loopback.
func (s *SMTP) auth(mechs string) smtp.Auth {
	offered := strings.Fields(strings.ToUpper(mechs))
	plain := len(offered) == 0
	login := false
	for _, m := range offered {
		plain = plain || m == "PLAIN"
		login = login || m == "LOGIN"
	}
	if !plain && login {
		return &loginAuth{username: s.username, password: s.password, host: s.host}
	}
	return smtp.PlainAuth("", s.username, s.password, s.host)
}

// loginAuth is the LOGIN mechanism (a username and a password prompt).
type loginAuth struct {
	username, password, host string
	step                     int
}

func (a *loginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && !isLoopback(server.Name) {
		return "", nil, errors.New("unencrypted connection")
	}
	if server.Name != a.host {
		return "", nil, errors.New("wrong host name")
	}
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(_ []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.username), nil
	case 2:
		return []byte(a.password), nil
	default:
		return nil, errors.New("unexpected LOGIN challenge")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// maxAddressLength bounds an address (RFC 5321: 254 for the path).
const maxAddressLength = 254

// ParseRecipient checks that s is one plain address (no display name, no
// group, no line breaks) of reasonable length and returns it.
func ParseRecipient(s string) (*mail.Address, error) {
	if len(s) == 0 || len(s) > maxAddressLength {
		return nil, fmt.Errorf("%w: length", ErrInvalidAddress)
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	if a.Name != "" || a.Address != s || !strings.Contains(a.Address, "@") {
		return nil, fmt.Errorf("%w: not a plain address", ErrInvalidAddress)
	}
	return a, nil
}
