package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	bolt "go.etcd.io/bbolt"
)

// The sign-in, consent and account pages: server-rendered html/template,
// no JavaScript, one small stylesheet. Every form carries a CSRF token
// bound to a cookie and to its purpose, and every page forbids framing.

//go:embed templates/*.html templates/style.css
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

const (
	cookieDevice = "oauth_device"
	cookieCSRF   = "oauth_csrf"
)

// pageData is what every page template receives.
type pageData struct {
	Title      string
	Server     string // this server's host
	CSRF       string
	Error      string
	Handle     string
	DID        string
	RequestURI string
	ClientID   string
	// The app asking, for the sign-in and consent pages.
	App *appView
	// For the account page.
	Sessions []sessionView
	Message  string
}

type appView struct {
	Name         string // the name the app gives itself ("" if none)
	Host         string // where its metadata lives: the name to trust
	ClientURI    string
	RedirectHost string
	Permissions  []permissionView
	Confidential bool
}

type permissionView struct {
	Title  string
	Detail string
	Scope  string
	// Risky marks permissions that hand over the account itself.
	Risky bool
}

type sessionView struct {
	ID       string
	App      appView
	Created  string
	LastUsed string
	Expires  string
}

func (s *Server) cookieName(base string) string {
	if s.issuerURL.Scheme == "https" {
		return "__Host-" + base // bound to this host, https, path /
	}
	return base
}

// securityHeaders are set on every page: no framing, no scripts, forms
// only to us (and, for the consent form's redirect, the app).
func (s *Server) securityHeaders(w http.ResponseWriter, formTarget string) {
	h := w.Header()
	formAction := "'self'"
	if formTarget != "" {
		formAction += " " + formTarget
	}
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) render(w http.ResponseWriter, status int, name string, d *pageData, formTarget string) {
	s.securityHeaders(w, formTarget)
	d.Server = s.issuerURL.Host
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, d); err != nil {
		s.log.Error("rendering oauth page", "page", name, "err", err)
	}
}

func (s *Server) errorPage(w http.ResponseWriter, status int, msg string) {
	s.render(w, status, "error.html", &pageData{Title: "Something went wrong", Error: msg}, "")
}

// csrfCookie returns the CSRF cookie of the browser, setting a new one if
// it has none.
func (s *Server) csrfCookie(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(s.cookieName(cookieCSRF)); err == nil && len(c.Value) >= 32 && len(c.Value) <= 64 {
		return c.Value
	}
	v := randomToken(32)
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(cookieCSRF), Value: v, Path: "/", HttpOnly: true,
		Secure: s.issuerURL.Scheme == "https", SameSite: http.SameSiteLaxMode})
	return v
}

// csrfToken binds the cookie to the purpose of one form.
func (s *Server) csrfToken(cookie, purpose string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(cookie + "\x00" + purpose))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF refuses a form post that is cross-site (by Origin or
// Sec-Fetch-Site) or whose token does not match the cookie and purpose.
func (s *Server) checkCSRF(r *http.Request, purpose string) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" && o != s.issuerURL.Scheme+"://"+s.issuerURL.Host {
		return false
	}
	if sf := r.Header.Get("Sec-Fetch-Site"); sf != "" && sf != "same-origin" {
		return false
	}
	c, err := r.Cookie(s.cookieName(cookieCSRF))
	if err != nil || c.Value == "" {
		return false
	}
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.csrfToken(c.Value, purpose)))
}

// pageForm parses a bounded form post of the pages.
func pageForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	return r.ParseForm() == nil
}

// deviceFrom returns the device of the browser's cookie (id, record), nil
// if none or expired.
func (s *Server) deviceFrom(r *http.Request) (string, *device) {
	c, err := r.Cookie(s.cookieName(cookieDevice))
	if err != nil {
		return "", nil
	}
	id, secret, ok := splitSecretToken(prefixDevice, c.Value)
	if !ok {
		return "", nil
	}
	var d *device
	_ = s.db.View(func(tx *bolt.Tx) error {
		d, _ = getJSON[device](tx, bucketDevices, id)
		return nil
	})
	if d == nil || !sameHash(d.SecretHash, hashSecret(secret)) || !s.now().Before(d.ExpiresAt) {
		return "", nil
	}
	return id, d
}

// signedIn returns the device id if the browser is signed in as the owner.
func (s *Server) signedIn(r *http.Request, owner syntax.DID) string {
	id, d := s.deviceFrom(r)
	if d == nil || d.Pending || d.Sub != owner.String() {
		return ""
	}
	return id
}

// newDevice stores a device for the owner and sets its cookie.
func (s *Server) newDevice(w http.ResponseWriter, r *http.Request, owner syntax.DID, pending bool) (string, error) {
	id := randomToken(16)
	tok, hash := newSecretToken(prefixDevice, id)
	now := s.now()
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	d := &device{SecretHash: hash, Sub: owner.String(), Pending: pending, UserAgent: ua, CreatedAt: now, ExpiresAt: now.Add(DeviceLifetime)}
	if pending {
		d.ExpiresAt = now.Add(PARLifetime)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx, bucketDevices, id, d) }); err != nil {
		return "", err
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(cookieDevice), Value: tok, Path: "/", HttpOnly: true,
		Secure: s.issuerURL.Scheme == "https", SameSite: http.SameSiteLaxMode, MaxAge: int(DeviceLifetime / time.Second)})
	return id, nil
}

// loadRequest returns a live, unanswered authorization request.
func (s *Server) loadRequest(requestURI, clientID string) (string, *authRequest, string) {
	id, ok := requestID(requestURI)
	if !ok {
		return "", nil, "This sign-in link is not valid. Go back to the app and start again."
	}
	var req *authRequest
	if err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		req, err = getJSON[authRequest](tx, bucketRequests, id)
		return err
	}); err != nil || req == nil || !s.now().Before(req.ExpiresAt) {
		return "", nil, "This sign-in request has expired. Go back to the app and start again."
	}
	if clientID != "" && clientID != req.ClientID {
		return "", nil, "This sign-in link does not belong to the app that opened it."
	}
	if req.CodeHash != "" || req.UsedBy != "" {
		return "", nil, "This sign-in request was already answered. Go back to the app."
	}
	return id, req, ""
}

// appOf describes the app of a request for the pages.
func (s *Server) appOf(ctx context.Context, req *authRequest) *appView {
	a := &appView{Name: req.ClientName, Confidential: req.Confidential}
	if c, err := s.resolveClient(ctx, req.ClientID); err == nil {
		a.Host = c.Host()
		a.ClientURI = c.Meta.ClientURI
		if a.Name == "" {
			a.Name = c.Meta.ClientName
		}
	} else {
		a.Host = req.ClientID
	}
	if u, err := url.Parse(req.RedirectURI); err == nil {
		a.RedirectHost = u.Host
		if a.RedirectHost == "" {
			a.RedirectHost = u.Scheme + ":"
		}
	}
	if perms, err := parseScope(req.Scope, s.cfg.Lexicons); err == nil {
		a.Permissions = describe(perms, s.cfg.Lexicons)
	}
	return a
}

// formTarget is the CSP form-action source of a redirect URI, so that the
// consent form's redirect to the app is allowed.
func formTarget(redirect string) string {
	u, err := url.Parse(redirect)
	if err != nil {
		return ""
	}
	if u.Host == "" {
		return u.Scheme + ":"
	}
	return u.Scheme + "://" + u.Host
}

// authorizePage is where the app sends the browser: the sign-in page, or,
// for a signed-in owner, the consent page.
func (s *Server) authorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, req, msg := s.loadRequest(q.Get("request_uri"), q.Get("client_id"))
	if req == nil {
		s.errorPage(w, http.StatusBadRequest, msg)
		return
	}
	did, handle, err := s.account.OAuthAccount(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "This server has no account yet.")
		return
	}
	cookie := s.csrfCookie(w, r)
	d := &pageData{Handle: handle.String(), DID: did.String(), RequestURI: q.Get("request_uri"), ClientID: req.ClientID, App: s.appOf(r.Context(), req)}
	if dev := s.signedIn(r, did); dev != "" && (req.Prompt != "login" || req.DeviceID == dev) {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			req.DeviceID, req.Sub = dev, did.String()
			return putJSON(tx, bucketRequests, id, req)
		}); err != nil {
			s.errorPage(w, http.StatusInternalServerError, "Could not save the request. Try again.")
			return
		}
		d.Title = "Allow access?"
		d.CSRF = s.csrfToken(cookie, "consent "+id)
		s.render(w, http.StatusOK, "consent.html", d, formTarget(req.RedirectURI))
		return
	}
	d.Title = "Sign in"
	d.CSRF = s.csrfToken(cookie, "sign-in "+id)
	if _, dev := s.deviceFrom(r); dev != nil && dev.Pending {
		s.render(w, http.StatusOK, "code.html", d, formTarget(req.RedirectURI))
		return
	}
	if req.LoginHint != "" {
		d.Handle = req.LoginHint
	}
	s.render(w, http.StatusOK, "signin.html", d, formTarget(req.RedirectURI))
}

// signIn checks the password (and the second factor) for a request.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	if !pageForm(w, r) {
		s.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	rawURI := r.PostFormValue("request_uri")
	id, req, msg := s.loadRequest(rawURI, "")
	if req == nil {
		s.errorPage(w, http.StatusBadRequest, msg)
		return
	}
	if !s.checkCSRF(r, "sign-in "+id) {
		s.errorPage(w, http.StatusForbidden, "This form expired or was sent from another site. Go back to the app and start again.")
		return
	}
	if r.PostFormValue("cancel") != "" {
		s.answer(w, r, id, req, false)
		return
	}
	did, handle, err := s.account.OAuthAccount(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "This server has no account yet.")
		return
	}
	cookie := s.csrfCookie(w, r)
	d := &pageData{Title: "Sign in", Handle: handle.String(), DID: did.String(), RequestURI: rawURI, ClientID: req.ClientID,
		App: s.appOf(r.Context(), req), CSRF: s.csrfToken(cookie, "sign-in "+id)}
	devID, page, status, errMsg := s.checkSignIn(w, r, did)
	if devID == "" {
		d.Error = errMsg
		if page == "code.html" {
			d.Title = "Enter the code"
		} else if id := r.PostFormValue("identifier"); id != "" && len(id) < 256 {
			d.Handle = id
		}
		s.render(w, status, page, d, formTarget(req.RedirectURI))
		return
	}
	// Bind the request to the browser that signed in for it (prompt=login
	// then knows this sign-in was fresh).
	{
		if err := s.db.Update(func(tx *bolt.Tx) error {
			req.DeviceID, req.Sub = devID, did.String()
			return putJSON(tx, bucketRequests, id, req)
		}); err != nil {
			s.errorPage(w, http.StatusInternalServerError, "Could not save the request. Try again.")
			return
		}
	}
	u := s.cfg.Issuer + "/oauth/authorize?" + url.Values{"client_id": {req.ClientID}, "request_uri": {rawURI}}.Encode()
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// checkSignIn runs one step of signing in (password, then the code where
// the account has a second factor). A device id means the browser is now
// signed in as that device; otherwise page and status say what to show,
// with errMsg.
func (s *Server) checkSignIn(w http.ResponseWriter, r *http.Request, owner syntax.DID) (devID string, page string, status int, errMsg string) {
	ctx := r.Context()
	if ok, _, _ := s.limit.Allow(s.clientIP(r)); !ok {
		return "", "signin.html", http.StatusTooManyRequests, "Too many attempts. Wait a few minutes and try again."
	}
	if code := r.PostFormValue("code"); code != "" {
		id, dev := s.deviceFrom(r)
		if dev == nil || !dev.Pending || s.factor == nil {
			return "", "signin.html", http.StatusUnauthorized, "Sign in with your password first."
		}
		if len(code) > 64 || s.factor.Check(ctx, strings.TrimSpace(code)) != nil {
			return "", "code.html", http.StatusUnauthorized, "That code is not right, or it has expired."
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			dev.Pending = false
			dev.ExpiresAt = s.now().Add(DeviceLifetime)
			return putJSON(tx, bucketDevices, id, dev)
		})
		if err != nil {
			return "", "signin.html", http.StatusInternalServerError, "Could not sign in. Try again."
		}
		return id, "", 0, ""
	}
	ident, pw := r.PostFormValue("identifier"), r.PostFormValue("password")
	if err := s.account.CheckPassword(ctx, ident, pw); err != nil {
		if !errors.Is(err, auth.ErrInvalidLogin) {
			s.log.ErrorContext(ctx, "oauth sign-in", "err", err)
		}
		return "", "signin.html", http.StatusUnauthorized, "Wrong handle or password."
	}
	pending := false
	if s.factor != nil {
		req, err := s.factor.Required(ctx)
		if err != nil {
			return "", "signin.html", http.StatusInternalServerError, "Could not sign in. Try again."
		}
		pending = req
	}
	id, err := s.newDevice(w, r, owner, pending)
	if err != nil {
		return "", "signin.html", http.StatusInternalServerError, "Could not sign in. Try again."
	}
	if pending {
		if err := s.factor.Send(ctx); err != nil {
			s.log.ErrorContext(ctx, "sending sign-in code", "err", err)
			return "", "code.html", http.StatusInternalServerError, "Could not send the code. Try again."
		}
		return "", "code.html", http.StatusOK, ""
	}
	return id, "", 0, ""
}

// consent takes the owner's answer for a request.
func (s *Server) consent(w http.ResponseWriter, r *http.Request) {
	if !pageForm(w, r) {
		s.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	id, req, msg := s.loadRequest(r.PostFormValue("request_uri"), "")
	if req == nil {
		s.errorPage(w, http.StatusBadRequest, msg)
		return
	}
	if !s.checkCSRF(r, "consent "+id) {
		s.errorPage(w, http.StatusForbidden, "This form expired or was sent from another site. Go back to the app and start again.")
		return
	}
	did, _, err := s.account.OAuthAccount(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "This server has no account yet.")
		return
	}
	dev := s.signedIn(r, did)
	if dev == "" || dev != req.DeviceID || req.Sub != did.String() {
		s.errorPage(w, http.StatusForbidden, "You are not signed in on this browser. Go back to the app and start again.")
		return
	}
	s.answer(w, r, id, req, r.PostFormValue("decision") == "allow")
}

// answer sends the browser back to the app: with a code if allowed, with
// access_denied otherwise. The redirect URI is the registered one the
// request named, so nothing here can redirect elsewhere.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, id string, req *authRequest, allow bool) {
	params := url.Values{"iss": {s.cfg.Issuer}}
	if req.State != "" {
		params.Set("state", req.State)
	}
	if allow {
		code, hash := newSecretToken(prefixCode, id)
		err := s.db.Update(func(tx *bolt.Tx) error {
			cur, err := getJSON[authRequest](tx, bucketRequests, id)
			if err != nil {
				return err
			}
			if cur == nil || cur.CodeHash != "" {
				return errors.New("request already answered")
			}
			req.CodeHash = hash
			req.ExpiresAt = s.now().Add(CodeLifetime)
			return putJSON(tx, bucketRequests, id, req)
		})
		if err != nil {
			s.errorPage(w, http.StatusConflict, "This sign-in request was already answered. Go back to the app.")
			return
		}
		params.Set("code", code)
	} else {
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRequests).Delete([]byte(id)) }); err != nil {
			s.errorPage(w, http.StatusInternalServerError, "Could not save the answer. Try again.")
			return
		}
		params.Set("error", "access_denied")
		params.Set("error_description", "The account owner denied access")
	}
	u, _ := url.Parse(req.RedirectURI)
	if req.ResponseMode == "fragment" {
		u.Fragment = ""
		u.RawFragment = params.Encode()
	} else {
		q := u.Query()
		for k, v := range params {
			q[k] = v
		}
		u.RawQuery = q.Encode()
	}
	s.securityHeaders(w, formTarget(req.RedirectURI))
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// accountPage lists the apps the owner authorized, with a revoke button
// each; a browser not signed in gets the sign-in form.
func (s *Server) accountPage(w http.ResponseWriter, r *http.Request) {
	did, handle, err := s.account.OAuthAccount(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "This server has no account yet.")
		return
	}
	cookie := s.csrfCookie(w, r)
	d := &pageData{Title: "Connected apps", Handle: handle.String(), DID: did.String(), CSRF: s.csrfToken(cookie, "account"),
		Message: r.URL.Query().Get("done")}
	if d.Message != "revoked" && d.Message != "signed-out" {
		d.Message = ""
	}
	if s.signedIn(r, did) == "" {
		d.Title = "Sign in"
		if _, dev := s.deviceFrom(r); dev != nil && dev.Pending {
			s.render(w, http.StatusOK, "account_code.html", d, "")
			return
		}
		s.render(w, http.StatusOK, "account_signin.html", d, "")
		return
	}
	sessions, err := s.Sessions(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusInternalServerError, "Could not list the apps.")
		return
	}
	for _, ss := range sessions {
		if ss.DID != did.String() {
			continue
		}
		v := sessionView{ID: ss.ID, Created: ss.CreatedAt.Format("2 Jan 2006"), LastUsed: ss.LastUsed.Format("2 Jan 2006 15:04"), Expires: ss.ExpiresAt.Format("2 Jan 2006")}
		v.App = appView{Name: ss.ClientName, Host: hostOf(ss.ClientID), Confidential: ss.Confidential}
		if perms, err := parseScope(ss.Scope, s.cfg.Lexicons); err == nil {
			v.App.Permissions = describe(perms, s.cfg.Lexicons)
		}
		d.Sessions = append(d.Sessions, v)
	}
	s.render(w, http.StatusOK, "account.html", d, "")
}

func hostOf(clientID string) string {
	if strings.HasPrefix(clientID, "http://localhost") {
		return "an app on this computer (development client)"
	}
	if u, err := url.Parse(clientID); err == nil && u.Host != "" {
		return u.Host
	}
	return clientID
}

func (s *Server) accountSignIn(w http.ResponseWriter, r *http.Request) {
	if !pageForm(w, r) {
		s.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !s.checkCSRF(r, "account") {
		s.errorPage(w, http.StatusForbidden, "This form expired or was sent from another site. Reload the page and try again.")
		return
	}
	did, handle, err := s.account.OAuthAccount(r.Context())
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "This server has no account yet.")
		return
	}
	devID, page, status, errMsg := s.checkSignIn(w, r, did)
	if devID == "" {
		cookie := s.csrfCookie(w, r)
		name := "account_signin.html"
		if page == "code.html" {
			name = "account_code.html"
		}
		s.render(w, status, name, &pageData{Title: "Sign in", Handle: handle.String(), DID: did.String(), Error: errMsg, CSRF: s.csrfToken(cookie, "account")}, "")
		return
	}
	http.Redirect(w, r, s.cfg.Issuer+"/oauth/account", http.StatusSeeOther)
}

func (s *Server) accountRevoke(w http.ResponseWriter, r *http.Request) {
	if !pageForm(w, r) || !s.checkCSRF(r, "account") {
		s.errorPage(w, http.StatusForbidden, "This form expired or was sent from another site. Reload the page and try again.")
		return
	}
	did, _, err := s.account.OAuthAccount(r.Context())
	if err != nil || s.signedIn(r, did) == "" {
		s.errorPage(w, http.StatusForbidden, "Sign in first.")
		return
	}
	if _, err := s.Revoke(r.Context(), r.PostFormValue("session")); err != nil {
		s.errorPage(w, http.StatusInternalServerError, "Could not revoke the app.")
		return
	}
	http.Redirect(w, r, s.cfg.Issuer+"/oauth/account?done=revoked", http.StatusSeeOther)
}

func (s *Server) accountSignOut(w http.ResponseWriter, r *http.Request) {
	if !pageForm(w, r) || !s.checkCSRF(r, "account") {
		s.errorPage(w, http.StatusForbidden, "This form expired or was sent from another site. Reload the page and try again.")
		return
	}
	if id, _ := s.deviceFrom(r); id != "" {
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDevices).Delete([]byte(id)) }); err != nil {
			s.errorPage(w, http.StatusInternalServerError, "Could not sign out.")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(cookieDevice), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.issuerURL.Scheme == "https", SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, s.cfg.Issuer+"/oauth/account?done=signed-out", http.StatusSeeOther)
}

func (s *Server) styleCSS(w http.ResponseWriter, r *http.Request) {
	b, _ := templateFS.ReadFile("templates/style.css")
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}

// Session is an authorized app session, for listing and revoking.
type Session struct {
	ID           string
	DID          string
	ClientID     string
	ClientName   string
	Confidential bool
	Scope        string
	CreatedAt    time.Time
	LastUsed     time.Time // last token refresh
	ExpiresAt    time.Time
}

// Sessions lists the live authorized app sessions, newest first.
func (s *Server) Sessions(ctx context.Context) ([]Session, error) {
	return ListSessions(ctx, s.db, s.now())
}

// Revoke ends one session; ok is false if there was none with that id.
func (s *Server) Revoke(ctx context.Context, id string) (bool, error) {
	return RevokeSession(ctx, s.db, id)
}

// ListSessions lists the live sessions stored in db (for the CLI, which
// runs without a Server).
func ListSessions(ctx context.Context, db *bolt.DB, now time.Time) ([]Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Session
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFamilies)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			f, err := getJSON[family](tx, bucketFamilies, string(k))
			if err != nil || f == nil {
				return err
			}
			if !now.Before(f.ExpiresAt) || !now.Before(f.RefreshExpiresAt) {
				return nil
			}
			out = append(out, Session{ID: string(k), DID: f.Sub, ClientID: f.ClientID, ClientName: f.ClientName,
				Confidential: f.Confidential, Scope: f.Scope, CreatedAt: f.CreatedAt, LastUsed: f.UpdatedAt, ExpiresAt: f.ExpiresAt})
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Session) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, err
}

// RevokeSession deletes the session id from db, reporting whether it
// existed. Its refresh token and access tokens stop working at once.
func RevokeSession(ctx context.Context, db *bolt.DB, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if id == "" || len(id) > 64 {
		return false, nil
	}
	found := false
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFamilies)
		if b == nil || b.Get([]byte(id)) == nil {
			return nil
		}
		found = true
		return b.Delete([]byte(id))
	})
	return found, err
}
