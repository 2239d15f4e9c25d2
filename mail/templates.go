package mail

import (
	"bytes"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
)

// TokenMail is what a token message says: who it is for, the token and
// until when it works.
type TokenMail struct {
	// To is the recipient address.
	To string
	// Handle names the account in the text.
	Handle string
	// Hostname is the PDS hostname, named in the text so the reader knows
	// which server sent it.
	Hostname string
	Token    string
	Expires  time.Time
}

// Token mail kinds. Subjects follow the reference PDS, with the server named.
type tokenKind struct {
	subject string
	// intro says what was requested; action what the token does.
	intro, action string
}

var (
	kindConfirmEmail = tokenKind{
		subject: "Confirm your email address",
		intro:   "Someone (hopefully you) asked to confirm this email address for the account @{{.Handle}} on {{.Hostname}}.",
		action:  "Enter this code in the app to confirm your email address:",
	}
	kindUpdateEmail = tokenKind{
		subject: "Email update requested",
		intro:   "Someone (hopefully you) asked to change the email address of the account @{{.Handle}} on {{.Hostname}}.",
		action:  "Enter this code in the app, with the new address, to change it:",
	}
	kindResetPassword = tokenKind{
		subject: "Password reset requested",
		intro:   "Someone (hopefully you) asked to reset the password of the account @{{.Handle}} on {{.Hostname}}.",
		action:  "Enter this code in the app, with your new password, to reset it:",
	}
	kindDeleteAccount = tokenKind{
		subject: "Account deletion requested",
		intro:   "Someone (hopefully you) asked to DELETE the account @{{.Handle}} on {{.Hostname}}, with all of its posts, media and followers.",
		action:  "To delete the account for good, enter this code in the app:",
	}
	kindPLCOperation = tokenKind{
		subject: "PLC update operation requested",
		intro:   "Someone (hopefully you) asked to change the identity (DID) of the account @{{.Handle}} on {{.Hostname}}, for example to move it to another server.",
		action:  "To sign the identity change, enter this code:",
	}
	kindSignIn = tokenKind{
		subject: "Your sign-in code",
		intro:   "Someone signed in to the account @{{.Handle}} on {{.Hostname}} with its password. If that was not you, change the password now: whoever it was knows it.",
		action:  "To finish signing in, enter this code:",
	}
)

// ConfirmEmail is the mail of requestEmailConfirmation.
func ConfirmEmail(p TokenMail) (*Message, error) { return tokenMessage(kindConfirmEmail, p) }

// UpdateEmail is the mail of requestEmailUpdate (sent to the current address).
func UpdateEmail(p TokenMail) (*Message, error) { return tokenMessage(kindUpdateEmail, p) }

// ResetPassword is the mail of requestPasswordReset.
func ResetPassword(p TokenMail) (*Message, error) { return tokenMessage(kindResetPassword, p) }

// DeleteAccount is the mail of requestAccountDelete.
func DeleteAccount(p TokenMail) (*Message, error) { return tokenMessage(kindDeleteAccount, p) }

// SignIn is the mail of the email second factor: the code a sign-in with
// the password needs when the account has the factor on.
func SignIn(p TokenMail) (*Message, error) { return tokenMessage(kindSignIn, p) }

// PLCOperation is the mail of requestPlcOperationSignature.
func PLCOperation(p TokenMail) (*Message, error) { return tokenMessage(kindPLCOperation, p) }

const textBody = `{{.Intro}}

{{.Action}}

    {{.Token}}

The code works once, until {{.Expires}}.

If you did not ask for this, ignore this message: nothing changes without the code.
`

var textTmpl = texttemplate.Must(texttemplate.New("text").Parse(textBody))

var htmlTmpl = htmltemplate.Must(htmltemplate.New("html").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Subject}}</title></head>
<body style="font-family: system-ui, sans-serif; line-height: 1.5; max-width: 36em">
<p>{{.Intro}}</p>
<p>{{.Action}}</p>
<p style="font-family: ui-monospace, monospace; font-size: 1.6em; letter-spacing: 0.1em"><strong>{{.Token}}</strong></p>
<p>The code works once, until {{.Expires}}.</p>
<p style="color: #555">If you did not ask for this, ignore this message: nothing changes without the code.</p>
</body></html>
`))

func tokenMessage(k tokenKind, p TokenMail) (*Message, error) {
	fill := func(s string) (string, error) {
		t, err := texttemplate.New("").Parse(s)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		err = t.Execute(&b, p)
		return b.String(), err
	}
	intro, err := fill(k.intro)
	if err != nil {
		return nil, err
	}
	action, err := fill(k.action)
	if err != nil {
		return nil, err
	}
	data := struct {
		Subject, Intro, Action, Token, Expires string
	}{
		Subject: k.subject,
		Intro:   intro,
		Action:  action,
		Token:   p.Token,
		Expires: p.Expires.UTC().Format("15:04 MST on 2 January 2006"),
	}
	var text, html bytes.Buffer
	if err := textTmpl.Execute(&text, data); err != nil {
		return nil, err
	}
	if err := htmlTmpl.Execute(&html, data); err != nil {
		return nil, err
	}
	m := &Message{
		To:       p.To,
		Subject:  k.subject + " (" + p.Hostname + ")",
		Text:     text.String(),
		HTML:     html.String(),
		NotAfter: p.Expires,
	}
	return m, m.Validate()
}

// Plain is a message written by someone (admin sendEmail): the text is sent
// as is, and the HTML part shows it escaped, line breaks kept.
func Plain(to, subject, text string) (*Message, error) {
	var html strings.Builder
	html.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body><p>")
	html.WriteString(strings.ReplaceAll(htmltemplate.HTMLEscapeString(text), "\n", "<br>\n"))
	html.WriteString("</p></body></html>\n")
	m := &Message{To: to, Subject: subject, Text: text, HTML: html.String()}
	return m, m.Validate()
}
