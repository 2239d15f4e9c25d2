package main

import (
	"fmt"
	"time"

	"github.com/pdsbox/pds/mail"
)

// emailConfig is the mail part of the configuration.
type emailConfig struct {
	// SMTP is the sender built from PDS_EMAIL_SMTP_URL and
	// PDS_EMAIL_FROM_ADDRESS; nil when neither is set (no mail is sent;
	// tokens come from `pds account tokens`).
	SMTP *mail.SMTP
	// RetryMin and RetryMax bound the outbox's retry backoff (zero: the
	// mail package's defaults); tests shorten them.
	RetryMin, RetryMax time.Duration
}

// loadEmailConfig reads PDS_EMAIL_SMTP_URL and PDS_EMAIL_FROM_ADDRESS: both
// or neither, as the reference requires.
func loadEmailConfig(getenv env) (emailConfig, error) {
	var c emailConfig
	u, from := getenv.str("PDS_EMAIL_SMTP_URL", ""), getenv.str("PDS_EMAIL_FROM_ADDRESS", "")
	switch {
	case u == "" && from == "":
		return c, nil
	case u == "" || from == "":
		return c, fmt.Errorf("PDS_EMAIL_SMTP_URL and PDS_EMAIL_FROM_ADDRESS must be set together")
	}
	s, err := mail.NewSMTP(mail.SMTPConfig{URL: u, From: from})
	if err != nil {
		return c, err
	}
	c.SMTP = s
	return c, nil
}
