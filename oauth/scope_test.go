package oauth

import (
	"context"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestPermissions(t *testing.T) {
	cat := catalog(t)
	const appview = "did:web:api.bsky.app#bsky_appview"
	type check struct {
		kind, a, b string
		want       bool
	}
	for _, tc := range []struct {
		scope  string
		checks []check
	}{
		{"atproto repo:app.bsky.feed.post?action=create", []check{
			{"repo", "app.bsky.feed.post", "create", true},
			{"repo", "app.bsky.feed.post", "update", false},
			{"repo", "app.bsky.feed.post", "delete", false},
			{"repo", "app.bsky.feed.like", "create", false},
			{"blob", "image/png", "", false},
			{"rpc", "app.bsky.feed.getTimeline", appview, false},
			{"identity", "handle", "", false},
		}},
		{"atproto repo:* blob:image/* rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview", []check{
			{"repo", "app.bsky.graph.follow", "delete", true},
			{"blob", "image/png", "", true},
			{"blob", "video/mp4", "", false},
			{"rpc", "app.bsky.feed.getTimeline", appview, true},
			{"rpc", "app.bsky.feed.getTimeline", "did:web:evil.example#bsky_appview", false},
			{"rpc", "app.bsky.feed.getAuthorFeed", appview, false},
		}},
		{"atproto transition:generic", []check{
			{"repo", "app.bsky.feed.post", "delete", true},
			{"blob", "video/mp4", "", true},
			{"rpc", "app.bsky.feed.getTimeline", appview, true},
			{"rpc", "chat.bsky.convo.listConvos", "did:web:api.bsky.chat#bsky_chat", false},
			{"account", "email", "read", false},
			{"identity", "handle", "", false},
		}},
		{"atproto transition:chat.bsky transition:email", []check{
			{"rpc", "chat.bsky.convo.listConvos", "did:web:api.bsky.chat#bsky_chat", true},
			{"account", "email", "read", true},
			{"account", "email", "manage", false},
			{"repo", "app.bsky.feed.post", "create", false},
		}},
		{"atproto identity:handle account:email?action=manage", []check{
			{"identity", "handle", "", true},
			{"identity", "*", "", false},
			{"account", "email", "read", true},
			{"account", "email", "manage", true},
			{"account", "repo", "manage", false},
		}},
		{"atproto include:app.bsky.authCreatePosts?aud=did:web:api.bsky.app%23bsky_appview", []check{
			{"repo", "app.bsky.feed.post", "create", true},
			{"repo", "app.bsky.feed.post", "delete", false},
			{"repo", "app.bsky.feed.like", "create", false},
			{"rpc", "app.bsky.video.uploadVideo", appview, true},
			{"rpc", "app.bsky.feed.getTimeline", appview, false},
		}},
	} {
		p, err := parseScope(tc.scope, cat)
		if err != nil {
			t.Fatalf("%s: %v", tc.scope, err)
		}
		for _, c := range tc.checks {
			var got bool
			switch c.kind {
			case "repo":
				got = p.AllowsRepo(c.a, c.b)
			case "blob":
				got = p.AllowsBlob(c.a)
			case "rpc":
				got = p.AllowsRPC(c.a, c.b)
			case "account":
				got = p.AllowsAccount(c.a, c.b)
			case "identity":
				got = p.AllowsIdentity(c.a)
			}
			if got != c.want {
				t.Errorf("%s: %s %s %s = %v, want %v", tc.scope, c.kind, c.a, c.b, got, c.want)
			}
		}
		if len(describe(p, cat)) != len(p.tokens) {
			t.Errorf("%s: not every token described", tc.scope)
		}
	}
	for _, bad := range []string{"", "repo:app.bsky.feed.post", "atproto repo:not-an-nsid", "atproto include:com.example.unknownSet",
		"atproto rpc:app.bsky.feed.getTimeline", "atproto blob:*", "atproto frobnicate"} {
		if _, err := parseScope(bad, cat); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestSweep: expired requests, sessions and devices go; live ones stay.
func TestSweep(t *testing.T) {
	p := newTestPDS(t, pdsOptions{})
	site, _ := newClientSite(t, []string{"atproto"})
	key := newKey(t)
	p.par(t, site, key, "atproto")
	p.tokens(t, site, key, "atproto")
	count := func() (n int) {
		p.db.View(func(tx *bolt.Tx) error {
			for _, b := range allBuckets {
				n += tx.Bucket(b).Stats().KeyN
			}
			return nil
		})
		return n
	}
	if n, _ := p.srv.Sweep(context.Background()); n != 0 {
		t.Fatalf("swept %d live records", n)
	}
	before := count()
	p.clock.advance(PublicSessionLifetime + time.Hour)
	n, err := p.srv.Sweep(context.Background())
	if err != nil || n != before || count() != 0 {
		t.Fatalf("swept %d of %d (%v), %d left", n, before, err, count())
	}
}
