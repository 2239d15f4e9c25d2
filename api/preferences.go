package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

type preferencesBody struct {
	Preferences []json.RawMessage `json:"preferences"`
}

func (s *server) getPreferences(ctx context.Context, _ *noParams) (*preferencesBody, error) {
	prefs, err := s.accounts.PreferencesAs(prefsAccess(ctx))
	if err != nil {
		return nil, err
	}
	return &preferencesBody{Preferences: prefs}, nil
}

// prefsAccess is what the caller may do with the preferences: everything
// with the account's own session, less with an app password (account owns
// the rule).
func prefsAccess(ctx context.Context) account.PrefsAccess {
	if principalFrom(ctx).Can(auth.PermAccountEmail) {
		return account.PrefsFull
	}
	return account.PrefsNoPersonal
}

func (s *server) putPreferences(ctx context.Context, in *preferencesBody) (*noOutput, error) {
	if in.Preferences == nil {
		return nil, invalidRequest("preferences is required")
	}
	return nil, s.accounts.PutPreferencesAs(prefsAccess(ctx), in.Preferences)
}

// proxiedElsewhere forwards a call of a method served here (the
// preferences) whose atproto-proxy header names a service other than the
// configured AppView; other calls go on to next.
func (s *server) proxiedElsewhere(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Atproto-Proxy"); h != "" && h != s.cfg.AppView.DID+"#bsky_appview" {
			s.proxy(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// appViewScope holds a scoped (OAuth) caller of an app.bsky method served
// here to the rpc: permission it would need for the AppView, before its
// input is read.
func (s *server) appViewScope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := scopedRPC(r.Context(), strings.TrimPrefix(r.URL.Path, "/xrpc/"), s.appViewAud()); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
