package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/internal/testpds"
)

// routePermissions is the permission each route declares: "" for public
// routes, "refresh" for the routes that take a refresh token themselves.
// Every route of the router must have a row (the test walks the router).
var routePermissions = map[string]string{
	"GET /":                                                  "",
	"GET /robots.txt":                                        "",
	"GET /xrpc/_health":                                      "",
	"GET /.well-known/atproto-did":                           "",
	"GET /.well-known/did.json":                              "",
	"GET com.atproto.server.describeServer":                  "",
	"POST com.atproto.server.createAccount":                  "",
	"POST com.atproto.server.createSession":                  "",
	"POST com.atproto.server.refreshSession":                 "refresh",
	"GET com.atproto.server.getSession":                      "account:read",
	"POST com.atproto.server.deleteSession":                  "refresh",
	"POST com.atproto.server.createAppPassword":              "account:manage",
	"GET com.atproto.server.listAppPasswords":                "account:manage",
	"POST com.atproto.server.revokeAppPassword":              "account:manage",
	"GET com.atproto.server.getServiceAuth":                  "rpc",
	"POST com.atproto.repo.createRecord":                     "repo:write",
	"POST com.atproto.repo.putRecord":                        "repo:write",
	"POST com.atproto.repo.deleteRecord":                     "repo:write",
	"POST com.atproto.repo.applyWrites":                      "repo:write",
	"GET com.atproto.repo.getRecord":                         "",
	"GET com.atproto.repo.listRecords":                       "",
	"GET com.atproto.repo.describeRepo":                      "",
	"POST com.atproto.repo.uploadBlob":                       "blob:write",
	"GET com.atproto.identity.resolveHandle":                 "",
	"GET com.atproto.identity.resolveDid":                    "",
	"POST com.atproto.identity.updateHandle":                 "identity:handle",
	"GET com.atproto.identity.getRecommendedDidCredentials":  "account:read",
	"GET app.bsky.actor.getPreferences":                      "preferences",
	"POST app.bsky.actor.putPreferences":                     "preferences",
	"GET app.bsky.feed.getFeed":                              "rpc",
	"POST app.bsky.notification.registerPush":                "rpc",
	"GET com.atproto.sync.subscribeRepos":                    "",
	"GET com.atproto.sync.getRepo":                           "",
	"GET com.atproto.sync.getLatestCommit":                   "",
	"GET com.atproto.sync.getRecord":                         "",
	"GET com.atproto.sync.getBlocks":                         "",
	"GET com.atproto.sync.listRepos":                         "",
	"GET com.atproto.sync.getRepoStatus":                     "",
	"GET com.atproto.sync.getHead":                           "",
	"GET com.atproto.sync.getCheckout":                       "",
	"GET com.atproto.sync.getBlob":                           "",
	"GET com.atproto.sync.listBlobs":                         "",
	"POST com.atproto.server.requestEmailConfirmation":       "account:email",
	"POST com.atproto.server.confirmEmail":                   "account:email",
	"POST com.atproto.server.requestEmailUpdate":             "account:manage",
	"POST com.atproto.server.updateEmail":                    "account:email",
	"POST com.atproto.server.requestPasswordReset":           "",
	"POST com.atproto.server.resetPassword":                  "",
	"POST com.atproto.server.requestAccountDelete":           "account:manage",
	"POST com.atproto.identity.requestPlcOperationSignature": "identity:plc",
	"GET com.atproto.admin.getAccountInfo":                   "admin",
	"GET com.atproto.admin.getAccountInfos":                  "admin",
	"POST com.atproto.admin.updateAccountPassword":           "admin",
	"POST com.atproto.admin.updateAccountEmail":              "admin",
	"POST com.atproto.admin.updateAccountHandle":             "admin",
	"POST com.atproto.admin.sendEmail":                       "admin",
	"POST com.atproto.server.createInviteCode":               "admin",
	"GET com.atproto.admin.getInviteCodes":                   "admin",
	"POST com.atproto.admin.disableInviteCodes":              "admin",
	"POST com.atproto.admin.disableAccountInvites":           "admin",
	"POST com.atproto.admin.enableAccountInvites":            "admin",
	"POST com.atproto.admin.updateSubjectStatus":             "admin",
	"GET com.atproto.admin.getSubjectStatus":                 "admin",
	"POST com.atproto.admin.deleteAccount":                   "admin",
	"POST /pds/admin/email-tokens":                           "admin",
	"POST com.atproto.identity.signPlcOperation":             "identity:plc",
	"POST com.atproto.identity.submitPlcOperation":           "identity:plc",
	"POST com.atproto.repo.importRepo":                       "account:manage",
	"GET com.atproto.repo.listMissingBlobs":                  "account:read",
	"POST com.atproto.server.activateAccount":                "account:manage",
	"GET com.atproto.server.checkAccountStatus":              "account:read",
	"POST com.atproto.server.deactivateAccount":              "account:manage",
	"POST com.atproto.server.deleteAccount":                  "",
	// Everything else under /xrpc/ is proxied with an access token.
	"* /xrpc/*": "rpc",
}

// grants is what each token kind may do, written out here (not read from
// the auth package) so that a change of either side fails the test.
var grants = map[string][]string{
	"access":     {"account:read", "account:email", "account:manage", "identity:handle", "identity:plc", "repo:write", "blob:write", "preferences", "rpc"},
	"admin":      {"admin"},
	"apppass":    {"account:read", "repo:write", "blob:write", "preferences", "rpc"},
	"privileged": {"account:read", "repo:write", "blob:write", "preferences", "rpc"},
	"service":    {"blob:write"},
}

// authErrors are the errors of the auth layer; any other answer means the
// request got past it to the handler.
var authErrors = map[string]bool{"AuthMissing": true, "InvalidToken": true, "ExpiredToken": true, "AuthRequired": true}

// expect is the auth outcome of a token kind on a route of permission perm:
// "ok" or the XRPC error name.
func expect(kind, perm string) string {
	switch {
	case perm == "":
		return "ok"
	case perm == "refresh":
		switch kind {
		case "refresh":
			return "ok"
		case "none", "admin":
			// These routes read a bearer token themselves; other
			// schemes count as none.
			return "AuthMissing"
		}
		return "InvalidToken"
	case kind == "none":
		return "AuthMissing"
	case kind == "service-lxm" || kind == "service-nolxm":
		if perm != "blob:write" {
			return "InvalidToken" // not a session token
		}
		if kind == "service-nolxm" {
			return "AuthRequired"
		}
		return "ok"
	}
	for _, g := range grants[kind] {
		if g == perm {
			return "ok"
		}
	}
	return "InvalidToken"
}

func TestRoutePermissions(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	did, access, _ := s.CreateAccount(t)
	ctx := context.Background()
	login := func(password string) *auth.Session {
		t.Helper()
		sess, err := s.Auth.Login(ctx, "alice.test", password)
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	ap, err := s.Auth.CreateAppPassword(ctx, "plain", false)
	if err != nil {
		t.Fatal(err)
	}
	pap, err := s.Auth.CreateAppPassword(ctx, "privileged", true)
	if err != nil {
		t.Fatal(err)
	}
	appAccess := login(ap.Password).AccessJWT
	privAccess := login(pap.Password).AccessJWT
	key, err := s.Accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	serviceJWT := func(lxm string) string {
		tok, err := auth.SignServiceJWT(key, syntax.DID(did), testpds.ServiceDID, lxm, time.Minute, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	kinds := []struct {
		name string
		// header returns the Authorization header for a call of nsid.
		header func(nsid string) string
	}{
		{"none", func(string) string { return "" }},
		{"access", func(string) string { return "Bearer " + access }},
		// A fresh refresh token per call: deleteSession revokes its own.
		{"refresh", func(string) string { return "Bearer " + login("hunter2-hunter2").RefreshJWT }},
		{"apppass", func(string) string { return "Bearer " + appAccess }},
		{"privileged", func(string) string { return "Bearer " + privAccess }},
		{"service-lxm", serviceJWT},
		{"service-nolxm", func(string) string { return serviceJWT("") }},
		{"admin", func(string) string {
			return "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:admin-secret"))
		}},
	}

	router, ok := s.Handler.(chi.Routes)
	if !ok {
		t.Fatalf("api.NewRouter returned %T, not a chi router", s.Handler)
	}
	seen := map[string]bool{}
	err = chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		key := method + " " + route
		if nsid, ok := strings.CutPrefix(route, "/xrpc/"); ok && nsid != "_health" && nsid != "*" {
			key = method + " " + nsid
		}
		if route == "/xrpc/*" {
			key = "* /xrpc/*"
			if seen[key] {
				return nil
			}
			method = "GET"
			route = "/xrpc/app.bsky.actor.getProfile"
		}
		seen[key] = true
		perm, ok := routePermissions[key]
		if !ok {
			t.Errorf("route %s has no row in routePermissions: declare its permission", key)
			return nil
		}
		for _, k := range kinds {
			nsid := strings.TrimPrefix(route, "/xrpc/")
			want := expect(k.name, perm)
			got := outcome(t, s.URL+route, method, k.header(nsid), key == "* /xrpc/*")
			if got != want {
				t.Errorf("%s with %s token: %s, want %s", key, k.name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range routePermissions {
		if !seen[key] {
			t.Errorf("routePermissions row %s names no route", key)
		}
	}
}

// outcome calls the route and classifies the answer: "ok" if the request
// got past the auth layer, else the auth error's name.
// proxied adds an atproto-proxy header, so that the call is not refused
// as unroutable before auth (the test server has no AppView).
func outcome(t *testing.T, url, method, authorization string, proxied bool) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if proxied {
		req.Header.Set("Atproto-Proxy", "did:web:appview.invalid#bsky_appview")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var env struct{ Error string }
	_ = json.Unmarshal(raw, &env)
	if resp.StatusCode >= 400 && authErrors[env.Error] {
		return env.Error
	}
	return "ok"
}
