package main

import (
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/mail"
)

// wireEmail makes the token store, the outbox (when SMTP is configured) and
// the email flows. The outbox is run by serve.
func (a *app) wireEmail() error {
	tokens := a.tokens // opened in wire, before the account, which uses it too
	var err error
	if s := a.cfg.Email.SMTP; s != nil {
		a.outbox, err = mail.NewOutbox(a.db, s, mail.OutboxConfig{
			RetryMin: a.cfg.Email.RetryMin,
			RetryMax: a.cfg.Email.RetryMax,
			Log:      a.log.With("component", "mail", "smtp", s.String()),
		})
		if err != nil {
			return err
		}
	}
	a.email = account.NewEmail(account.EmailConfig{
		DB:       a.db,
		Auth:     a.auth,
		Tokens:   tokens,
		Outbox:   a.outbox,
		Hostname: a.cfg.Hostname,
		Now:      a.cfg.Now,
		Log:      a.log,
	})
	return nil
}
