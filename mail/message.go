package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
)

// Message is one mail to send: a plain-text body and, optionally, an HTML
// alternative. The sender address is the server's (PDS_EMAIL_FROM_ADDRESS).
type Message struct {
	// To is one plain address.
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
	// NotAfter, when set, is the time after which sending is pointless
	// (the token in it has expired): the outbox drops the message then
	// instead of delivering it late.
	NotAfter time.Time `json:"notAfter,omitzero"`
}

// Bounds of a message, so that a queued message cannot grow without limit.
const (
	MaxSubjectLength = 998
	MaxBodyLength    = 1 << 20
)

// Validate checks the recipient and the sizes, and that the subject is one
// line (a line break there would inject headers).
func (m *Message) Validate() error {
	if _, err := ParseRecipient(m.To); err != nil {
		return err
	}
	if m.Subject == "" || len(m.Subject) > MaxSubjectLength || strings.ContainsAny(m.Subject, "\r\n") {
		return fmt.Errorf("%w: the subject must be one line of 1 to %d bytes", ErrInvalidMessage, MaxSubjectLength)
	}
	if m.Text == "" || len(m.Text) > MaxBodyLength || len(m.HTML) > MaxBodyLength {
		return fmt.Errorf("%w: the body must be 1 byte to %d bytes", ErrInvalidMessage, MaxBodyLength)
	}
	return nil
}

// Encode renders m as an RFC 5322 message from from, dated now:
// multipart/alternative (text, then HTML) when there is HTML, otherwise
// text/plain; bodies quoted-printable UTF-8, the subject RFC 2047 encoded.
func (m *Message) Encode(from *mail.Address, now time.Time) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	header("From", from.String())
	header("To", m.To)
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", messageID(from.Address))
	header("MIME-Version", "1.0")

	if m.HTML == "" {
		header("Content-Type", "text/plain; charset=utf-8")
		header("Content-Transfer-Encoding", "quoted-printable")
		buf.WriteString("\r\n")
		if err := writeQP(&buf, m.Text); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	mw := multipart.NewWriter(&buf)
	header("Content-Type", "multipart/alternative; boundary="+mw.Boundary())
	buf.WriteString("\r\n")
	for _, part := range []struct{ typ, body string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.typ + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		if err := writeQP(pw, part.body); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeQP(w interface{ Write([]byte) (int, error) }, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(s)); err != nil {
		return err
	}
	return qp.Close()
}

// messageID makes a unique Message-ID in the sender's domain.
func messageID(fromAddr string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	domain := "localhost"
	if i := strings.LastIndexByte(fromAddr, '@'); i >= 0 {
		domain = fromAddr[i+1:]
	}
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">"
}
