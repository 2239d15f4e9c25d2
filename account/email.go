package account

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/mail"
	bolt "go.etcd.io/bbolt"
)

// Errors of the email flows; the api maps them to XRPC errors.
var (
	// ErrNoEmail: a flow that mails the account, which has no address.
	ErrNoEmail = errors.New("account does not have an email address")
	// ErrEmailTokenRequired: updateEmail without a token while the current
	// address is confirmed (XRPC TokenRequired).
	ErrEmailTokenRequired = errors.New("confirmation token required")
)

// EmailConfig configures the email flows.
type EmailConfig struct {
	DB     *bolt.DB
	Auth   *auth.Store
	Tokens *auth.EmailTokens
	// Outbox sends the mail; nil when no SMTP is configured, in which case
	// tokens are still issued and the operator reads fresh ones with
	// `pds account tokens`.
	Outbox *mail.Outbox
	// Hostname names the server in the messages.
	Hostname string
	// Now is the clock of confirmations; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Email runs the flows that prove a request comes from the account holder
// by a code sent to the account's address: confirming the address, changing
// it, resetting the password, deleting the account and signing a PLC
// operation. Each request issues a single-use token (auth.EmailTokens) and
// queues its mail in the same transaction, so a token exists exactly when
// its mail will be sent.
type Email struct {
	cfg EmailConfig
	log *slog.Logger
}

// NewEmail returns the email flows.
func NewEmail(cfg EmailConfig) *Email {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Email{cfg: cfg, log: log}
}

// account reads the account record.
func (e *Email) account(ctx context.Context) (*Account, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var a *Account
	err := e.cfg.DB.View(func(tx *bolt.Tx) error {
		var err error
		a, err = getAccount(tx)
		return err
	})
	return a, err
}

func (e *Email) now() time.Time {
	if e.cfg.Now != nil {
		return e.cfg.Now()
	}
	return time.Now()
}

// MailConfigured reports whether mail is sent (an SMTP server is set).
func (e *Email) MailConfigured() bool { return e.cfg.Outbox != nil }

// mailFor builds the message of each token purpose.
var mailFor = map[auth.EmailTokenPurpose]func(mail.TokenMail) (*mail.Message, error){
	auth.PurposeConfirmEmail:  mail.ConfirmEmail,
	auth.PurposeUpdateEmail:   mail.UpdateEmail,
	auth.PurposeResetPassword: mail.ResetPassword,
	auth.PurposeDeleteAccount: mail.DeleteAccount,
	auth.PurposePLCOperation:  mail.PLCOperation,
	auth.PurposeSignIn:        mail.SignIn,
}

// sendToken issues a token of purpose and queues its mail to the account's
// address, in one transaction.
func (e *Email) sendToken(ctx context.Context, purpose auth.EmailTokenPurpose) error {
	acct, err := e.account(ctx)
	if err != nil {
		return err
	}
	if acct.Email == "" {
		return ErrNoEmail
	}
	err = e.cfg.DB.Update(func(tx *bolt.Tx) error {
		tok, exp, err := e.cfg.Tokens.IssueTx(tx, purpose)
		if err != nil {
			return err
		}
		if e.cfg.Outbox == nil {
			return nil
		}
		msg, err := mailFor[purpose](mail.TokenMail{
			To: acct.Email, Handle: acct.Handle.String(), Hostname: e.cfg.Hostname, Token: tok, Expires: exp,
		})
		if err != nil {
			return fmt.Errorf("building the %s mail: %w", purpose, err)
		}
		return e.cfg.Outbox.EnqueueTx(tx, msg)
	})
	if err != nil {
		return err
	}
	if e.cfg.Outbox == nil {
		// Never the token itself: only where to get one.
		e.log.Warn("email token issued, but no SMTP is configured (PDS_EMAIL_SMTP_URL): run `pds account tokens` on the server for a code", "purpose", purpose)
	}
	return nil
}

// RequestConfirmation mails a confirm_email token (requestEmailConfirmation).
func (e *Email) RequestConfirmation(ctx context.Context) error {
	return e.sendToken(ctx, auth.PurposeConfirmEmail)
}

// Confirm marks email confirmed with a confirm_email token (confirmEmail):
// ErrEmailMismatch unless email is the account's address, and the token
// errors of auth.EmailTokens.
func (e *Email) Confirm(ctx context.Context, email, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.cfg.DB.Update(func(tx *bolt.Tx) error {
		if err := e.cfg.Tokens.ConsumeTx(tx, auth.PurposeConfirmEmail, token); err != nil {
			return err
		}
		return confirmEmailTx(tx, email, e.now())
	})
}

// RequestUpdate starts an address change (requestEmailUpdate). A token is
// needed, and mailed to the current address, only when that address is
// confirmed; tokenRequired says so.
func (e *Email) RequestUpdate(ctx context.Context) (tokenRequired bool, err error) {
	acct, err := e.account(ctx)
	if err != nil {
		return false, err
	}
	if acct.EmailConfirmedAt.IsZero() {
		return false, nil
	}
	return true, e.sendToken(ctx, auth.PurposeUpdateEmail)
}

// Update changes the address (updateEmail). While the current address is
// confirmed an update_email token is required; the new address starts
// unconfirmed, and the email second factor is off. emailAuthFactor (nil
// when absent) with the current, confirmed address turns the second factor
// on, or off with an update_email token (without one, a code is mailed and
// the answer is ErrEmailTokenRequired), as the reference does; turning it
// on for any other address is ErrEmailAuthFactorUnconfirmed.
func (e *Email) Update(ctx context.Context, email, token string, emailAuthFactor *bool) error {
	addr, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sendCode := false
	err = e.cfg.DB.Update(func(tx *bolt.Tx) error {
		acct, err := getAccount(tx)
		if err != nil {
			return err
		}
		if emailAuthFactor != nil {
			handled, send, err := e.updateFactorTx(tx, acct, addr, token, *emailAuthFactor)
			if handled || err != nil {
				sendCode = send
				return err
			}
		}
		if !acct.EmailConfirmedAt.IsZero() {
			if strings.TrimSpace(token) == "" {
				return ErrEmailTokenRequired
			}
			if err := e.cfg.Tokens.ConsumeTx(tx, auth.PurposeUpdateEmail, token); err != nil {
				return err
			}
		}
		// A pending confirmation was for the old address, and the second
		// factor must not send codes to an unconfirmed one.
		if err := e.cfg.Tokens.DeleteTx(tx, auth.PurposeConfirmEmail); err != nil {
			return err
		}
		if err := deleteFactorTx(tx); err != nil {
			return err
		}
		return setEmailTx(tx, addr)
	})
	if err != nil {
		return err
	}
	if sendCode {
		if err := e.sendToken(ctx, auth.PurposeUpdateEmail); err != nil {
			return err
		}
		return ErrEmailTokenRequired
	}
	return nil
}

// RequestPasswordReset mails a reset_password token when email is the
// account's address. It answers the same whether or not it is, so that the
// answer does not tell which addresses have accounts here.
func (e *Email) RequestPasswordReset(ctx context.Context, email string) error {
	acct, err := e.account(ctx)
	if errors.Is(err, ErrNoAccount) {
		return nil
	}
	if err != nil {
		return err
	}
	if acct.Email == "" || !strings.EqualFold(acct.Email, strings.TrimSpace(email)) {
		return nil
	}
	return e.sendToken(ctx, auth.PurposeResetPassword)
}

// ResetPassword sets a new password with a reset_password token
// (resetPassword). Every session ends: refresh tokens are deleted and
// earlier access tokens refused (auth.Store.SetPasswordTx).
func (e *Email) ResetPassword(ctx context.Context, token, password string) error {
	return setPassword(ctx, e.cfg.DB, e.cfg.Auth, password, func(tx *bolt.Tx) error {
		return e.cfg.Tokens.ConsumeTx(tx, auth.PurposeResetPassword, token)
	})
}

// RequestAccountDelete mails a delete_account token (requestAccountDelete).
func (e *Email) RequestAccountDelete(ctx context.Context) error {
	return e.sendToken(ctx, auth.PurposeDeleteAccount)
}

// RequestPLCOperationSignature mails a plc_operation token
// (requestPlcOperationSignature); signPlcOperation consumes it.
func (e *Email) RequestPLCOperationSignature(ctx context.Context) error {
	return e.sendToken(ctx, auth.PurposePLCOperation)
}

// LiveTokens lists the purposes with a usable token and their expiries.
func (e *Email) LiveTokens(ctx context.Context) ([]auth.LiveEmailToken, error) {
	return e.cfg.Tokens.Live(ctx)
}

// ErrMailNotConfigured: sendEmail on a server without SMTP.
var ErrMailNotConfigured = errors.New("no SMTP server is configured (PDS_EMAIL_SMTP_URL)")

// SendToAccount queues a message written by the operator to the account's
// address (admin sendEmail). Like the reference, it fails when mail is not
// configured rather than drop the message.
func (e *Email) SendToAccount(ctx context.Context, subject, text string) error {
	if e.cfg.Outbox == nil {
		return ErrMailNotConfigured
	}
	acct, err := e.account(ctx)
	if err != nil {
		return err
	}
	if acct.Email == "" {
		return ErrNoEmail
	}
	msg, err := mail.Plain(acct.Email, subject, text)
	if err != nil {
		return err
	}
	return e.cfg.Outbox.Enqueue(ctx, msg)
}

// NormalizeEmail checks that s is one plain address and lowercases it
// (ErrInvalidEmail otherwise).
func NormalizeEmail(s string) (string, error) {
	a, err := mail.ParseRecipient(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidEmail, err)
	}
	return strings.ToLower(a.Address), nil
}

// AdminSetEmail replaces the account's address for the operator
// (admin.updateAccountEmail): no code is needed, the new address starts
// unconfirmed and a pending confirmation or update code is void.
func (e *Email) AdminSetEmail(ctx context.Context, email string) error {
	addr, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.cfg.DB.Update(func(tx *bolt.Tx) error {
		for _, p := range []auth.EmailTokenPurpose{auth.PurposeConfirmEmail, auth.PurposeUpdateEmail} {
			if err := e.cfg.Tokens.DeleteTx(tx, p); err != nil {
				return err
			}
		}
		if err := deleteFactorTx(tx); err != nil {
			return err
		}
		return setEmailTx(tx, addr)
	})
}

// IssuedToken is a code issued for the operator.
type IssuedToken struct {
	Purpose   auth.EmailTokenPurpose
	Token     string
	ExpiresAt time.Time
}

// IssueForOperator gives the operator codes to pass on (`pds account
// tokens`, `plc-token`, `delete-token`; ErrNoAccount without an account): a fresh code for purpose, or, when purpose is empty, a fresh
// code for every purpose that has a live one (someone asked for it and the
// mail is missing). Only hashes are stored, so a fresh code replaces the
// mailed one: the old one stops working.
func (e *Email) IssueForOperator(ctx context.Context, purpose string) ([]IssuedToken, error) {
	// Codes are for the account's flows: none without an account.
	if _, err := e.account(ctx); err != nil {
		return nil, err
	}
	var purposes []auth.EmailTokenPurpose
	if purpose != "" {
		p := auth.EmailTokenPurpose(purpose)
		if !p.Valid() {
			return nil, fmt.Errorf("%w: %q (one of %v)", auth.ErrEmailTokenPurpose, purpose, auth.EmailTokenPurposes)
		}
		purposes = append(purposes, p)
	} else {
		live, err := e.cfg.Tokens.Live(ctx)
		if err != nil {
			return nil, err
		}
		for _, l := range live {
			purposes = append(purposes, l.Purpose)
		}
	}
	var out []IssuedToken
	for _, p := range purposes {
		tok, exp, err := e.cfg.Tokens.Issue(ctx, p)
		if err != nil {
			return nil, err
		}
		out = append(out, IssuedToken{Purpose: p, Token: tok, ExpiresAt: exp})
	}
	e.log.Info("email codes issued to the operator", "count", len(out))
	return out, nil
}
