package api

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/repo"
)

// Read-after-write: for six AppView reads, the account's own records that
// the AppView has not indexed yet (newer than its Atproto-Repo-Rev) are
// merged into the answer, marked by Atproto-Upstream-Lag, as the reference
// does. Any failure falls back to the AppView's answer unchanged.

// localState is what the account wrote after the AppView's rev.
type localState struct {
	did     syntax.DID
	handle  string
	profile map[string]any   // the newer app.bsky.actor.profile/self, if any
	posts   []map[string]any // post views of newer posts, newest first
	oldest  time.Time
}

type munger func(body map[string]any, r *http.Request, l *localState) bool

var readAfterWrite = map[string]munger{
	"app.bsky.feed.getTimeline":   mungeTimeline,
	"app.bsky.feed.getAuthorFeed": mungeAuthorFeed,
	"app.bsky.feed.getActorLikes": mungeActorLikes,
	"app.bsky.feed.getPostThread": mungeThread,
	"app.bsky.actor.getProfile":   mungeProfile,
	"app.bsky.actor.getProfiles":  mungeProfiles,
}

var rawCollections = []syntax.NSID{"app.bsky.feed.post", "app.bsky.actor.profile"}

// munge answers w from resp with local records merged in, and reports
// whether it did; false leaves resp untouched for relay.
func (s *server) munge(w http.ResponseWriter, r *http.Request, resp *http.Response, m munger) bool {
	rev := resp.Header.Get("Atproto-Repo-Rev")
	if _, err := syntax.ParseTID(rev); err != nil {
		return false
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" || resp.Header.Get("Content-Encoding") != "" {
		return false
	}
	l, ok := s.localSince(r, rev)
	if !ok {
		return false
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxProxyResponseBody+1))
	if err != nil || len(raw) > maxProxyResponseBody {
		// The body is partly consumed: answer what was read, as is.
		writeRaw(w, resp, raw)
		return true
	}
	var body map[string]any
	if json.Unmarshal(raw, &body) != nil || !m(body, r, l) {
		writeRaw(w, resp, raw)
		return true
	}
	out, err := json.Marshal(body)
	if err != nil {
		writeRaw(w, resp, raw)
		return true
	}
	for _, h := range forwardResponseHeaders {
		if v := resp.Header.Get(h); v != "" && h != "Content-Length" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Atproto-Upstream-Lag", strconv.FormatInt(time.Since(l.oldest).Milliseconds(), 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
	return true
}

func writeRaw(w http.ResponseWriter, resp *http.Response, raw []byte) {
	for _, h := range forwardResponseHeaders {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, bytes.NewReader(raw))
}

// localSince collects the account's posts and profile written after rev.
func (s *server) localSince(r *http.Request, rev string) (*localState, bool) {
	p := principalFrom(r.Context())
	rp, err := s.accounts.Repo()
	if err != nil || p == nil || p.DID != rp.DID() {
		return nil, false
	}
	recs, ok, err := rp.RecordsSince(rev, rawCollections, 10)
	if err != nil || !ok || len(recs) == 0 {
		return nil, false
	}
	acct, err := s.accounts.Account(r.Context())
	if err != nil {
		return nil, false
	}
	l := &localState{did: rp.DID(), handle: acct.Handle.String(), oldest: time.Now()}
	for _, rec := range recs {
		if t, err := syntax.ParseTID(rec.Rev); err == nil && t.Time().Before(l.oldest) {
			l.oldest = t.Time()
		}
		val, err := atdata.UnmarshalCBOR(rec.Data)
		if err != nil {
			continue
		}
		// Back to plain JSON values, as the AppView's answer holds them.
		j, err := json.Marshal(val)
		if err != nil {
			continue
		}
		var plain map[string]any
		if json.Unmarshal(j, &plain) != nil {
			continue
		}
		switch rec.Collection {
		case "app.bsky.actor.profile":
			if rec.RKey == "self" {
				l.profile = plain
			}
		case "app.bsky.feed.post":
			l.posts = append(l.posts, l.postView(rec.Record, plain))
		}
	}
	return l, true
}

// author is the account's basic profile view, with the local profile's
// display name and avatar when it is newer than the AppView's.
func (l *localState) author() map[string]any {
	a := map[string]any{"did": l.did.String(), "handle": l.handle}
	if l.profile != nil {
		if v, ok := l.profile["displayName"]; ok {
			a["displayName"] = v
		}
	}
	return a
}

func (l *localState) postView(rec repo.Record, value map[string]any) map[string]any {
	indexed, _ := value["createdAt"].(string)
	if indexed == "" {
		indexed = time.Now().UTC().Format(timeFormat)
	}
	return map[string]any{
		"$type":       "app.bsky.feed.defs#postView",
		"uri":         atURI(l.did, rec.Collection, rec.RKey),
		"cid":         rec.CID.String(),
		"author":      l.author(),
		"record":      value,
		"indexedAt":   indexed,
		"replyCount":  0,
		"repostCount": 0,
		"likeCount":   0,
		"quoteCount":  0,
		"labels":      []any{},
	}
}

// insertPosts adds local posts absent from a feed, newest first by
// indexedAt, as feed items.
func insertPosts(feed []any, posts []map[string]any) []any {
	have := map[string]bool{}
	for _, it := range feed {
		if m, ok := it.(map[string]any); ok {
			if p, ok := m["post"].(map[string]any); ok {
				if u, ok := p["uri"].(string); ok {
					have[u] = true
				}
			}
		}
	}
	for _, p := range posts {
		if !have[p["uri"].(string)] {
			feed = append(feed, map[string]any{"post": p})
		}
	}
	sort.SliceStable(feed, func(i, j int) bool { return indexedAt(feed[i]) > indexedAt(feed[j]) })
	return feed
}

func indexedAt(item any) string {
	m, _ := item.(map[string]any)
	p, _ := m["post"].(map[string]any)
	s, _ := p["indexedAt"].(string)
	return s
}

// refreshAuthor overlays the local profile on the account's own posts.
func refreshAuthor(feed []any, l *localState) {
	if l.profile == nil {
		return
	}
	for _, it := range feed {
		m, _ := it.(map[string]any)
		p, _ := m["post"].(map[string]any)
		if a, ok := p["author"].(map[string]any); ok && a["did"] == l.did.String() {
			overlayProfile(a, l)
		}
	}
}

func overlayProfile(view map[string]any, l *localState) {
	for _, k := range []string{"displayName", "description"} {
		if v, ok := l.profile[k]; ok {
			view[k] = v
		} else {
			delete(view, k)
		}
	}
}

func isSelf(r *http.Request, l *localState, param string) bool {
	a := r.URL.Query().Get(param)
	return a == l.did.String() || a == l.handle
}

func mungeTimeline(body map[string]any, r *http.Request, l *localState) bool {
	feed, ok := body["feed"].([]any)
	if !ok {
		return false
	}
	refreshAuthor(feed, l)
	body["feed"] = insertPosts(feed, l.posts)
	return true
}

// mungeAuthorFeed is mungeTimeline for the account's own feed only.
func mungeAuthorFeed(body map[string]any, r *http.Request, l *localState) bool {
	return isSelf(r, l, "actor") && mungeTimeline(body, r, l)
}

func mungeActorLikes(body map[string]any, r *http.Request, l *localState) bool {
	feed, ok := body["feed"].([]any)
	if !ok || l.profile == nil {
		return false
	}
	refreshAuthor(feed, l)
	return true
}

// mungeThread adds the account's newer direct replies to the thread.
func mungeThread(body map[string]any, r *http.Request, l *localState) bool {
	thread, ok := body["thread"].(map[string]any)
	if !ok {
		return false
	}
	post, _ := thread["post"].(map[string]any)
	uri, _ := post["uri"].(string)
	if uri == "" {
		return false
	}
	replies, _ := thread["replies"].([]any)
	added := false
	for _, p := range l.posts {
		rec, _ := p["record"].(map[string]any)
		reply, _ := rec["reply"].(map[string]any)
		parent, _ := reply["parent"].(map[string]any)
		if parent["uri"] == uri {
			replies = append(replies, map[string]any{"$type": "app.bsky.feed.defs#threadViewPost", "post": p, "replies": []any{}})
			added = true
		}
	}
	if !added {
		return false
	}
	thread["replies"] = replies
	return true
}

func mungeProfile(body map[string]any, r *http.Request, l *localState) bool {
	if l.profile == nil || body["did"] != l.did.String() {
		return false
	}
	overlayProfile(body, l)
	return true
}

func mungeProfiles(body map[string]any, r *http.Request, l *localState) bool {
	profiles, ok := body["profiles"].([]any)
	if !ok || l.profile == nil {
		return false
	}
	changed := false
	for _, p := range profiles {
		if m, ok := p.(map[string]any); ok && m["did"] == l.did.String() {
			overlayProfile(m, l)
			changed = true
		}
	}
	return changed
}
