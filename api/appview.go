package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// getFeed asks the AppView for the feed generator's DID, then proxies with a
// service JWT for that feed generator (aud), as the reference does.
func (s *server) getFeed(w http.ResponseWriter, r *http.Request) {
	feed := r.URL.Query().Get("feed")
	uri, err := syntax.ParseATURI(feed)
	if err != nil || uri.Collection() != "app.bsky.feed.generator" {
		writeError(w, r, s.log, invalidRequest("Invalid feed: %s", feed))
		return
	}
	if err := scopedRPC(r.Context(), "app.bsky.feed.getFeed", s.proxyAud(r, "app.bsky.feed.getFeed")); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	target, err := s.proxyTarget(r.Context(), r, "app.bsky.feed.getFeed")
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// The generator record names the feed generator service.
	q := url.Values{"repo": {uri.Authority().String()}, "collection": {"app.bsky.feed.generator"}, "rkey": {uri.RecordKey().String()}}
	gr, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/?"+q.Encode(), nil)
	resp, err := s.forward(gr, target, "com.atproto.repo.getRecord", target.DID, "com.atproto.repo.getRecord", nil)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var rec struct {
		Value struct {
			DID string `json:"did"`
		} `json:"value"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rec)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || rec.Value.DID == "" {
		writeError(w, r, s.log, invalidRequest("could not resolve feed generator of %s", feed))
		return
	}
	resp, err = s.forward(r, target, "app.bsky.feed.getFeed", rec.Value.DID, "app.bsky.feed.getFeedSkeleton", nil)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	defer resp.Body.Close()
	relay(w, resp)
}

// registerPush sends the push registration with a service JWT for the
// notification service named in the body: the AppView itself, or the
// #bsky_notif service of that DID.
func (s *server) registerPush(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var in struct {
		ServiceDID string `json:"serviceDid"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, r, s.log, describeJSONError(err))
		return
	}
	did, err := syntax.ParseDID(in.ServiceDID)
	if err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid serviceDid"))
		return
	}
	nsid := strings.TrimPrefix(r.URL.Path, "/xrpc/")
	aud := did.String() + "#bsky_notif"
	if did.String() == s.cfg.AppView.DID {
		aud = s.appViewAud()
	}
	if err := scopedRPC(r.Context(), nsid, aud); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	target := s.cfg.AppView
	if did.String() != s.cfg.AppView.DID {
		if s.resolver == nil {
			writeError(w, r, s.log, invalidRequest("could not resolve notification service"))
			return
		}
		u, err := s.resolver.ServiceEndpoint(r.Context(), did, "bsky_notif")
		if err != nil {
			writeError(w, r, s.log, invalidRequest("could not resolve notification service"))
			return
		}
		target = Service{DID: did.String(), URL: u}
	}
	if target.URL == "" {
		writeError(w, r, s.log, invalidRequest("No service configured for %s", nsid))
		return
	}
	resp, err := s.forward(r, target, nsid, did.String(), nsid, body)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	defer resp.Body.Close()
	relay(w, resp)
}
