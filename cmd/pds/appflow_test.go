package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
)

// The XRPC calls the Bluesky app (social-app on @atproto/api) makes against
// its PDS on login, the home timeline, posting with an image, opening a
// profile, chat, and changing preferences, in order, written from the app's
// code paths. The agent sets atproto-proxy: did:web:api.bsky.app#bsky_appview
// on every request (so PDS-local methods receive it too), chat calls use
// did:web:api.bsky.chat#bsky_chat and reports the moderation service's
// #atproto_labeler. Every AppView call carries atproto-accept-labelers.
//
// Placeholders: {did} {handle} {password} {now} {tid} {exp30} {blob}
// {post_uri} {post_cid} {mod}.

// appDest is where a call must be served.
type appDest string

const (
	appLocal   appDest = "local"
	appAppView appDest = "appview"
	appChat    appDest = "chat"
	appMod     appDest = "mod"
	appFeed    appDest = "feed" // getRecord of the generator, then getFeed for the feed generator
)

type appCall struct {
	phase, method, nsid, query string
	body                       string // JSON with placeholders; "<image>" for image bytes
	proxy                      string // "appview" (default), "chat", "mod", "none"
	dest                       appDest
	capture                    string // what to remember from the answer
}

var appFlow = []appCall{
	// Login.
	{phase: "login", method: "GET", nsid: "com.atproto.server.describeServer", proxy: "none", dest: appLocal},
	{phase: "login", method: "POST", nsid: "com.atproto.server.createSession", proxy: "none", dest: appLocal, capture: "session",
		body: `{"identifier":"{handle}","password":"{password}","allowTakendown":true}`},
	{phase: "login", method: "GET", nsid: "com.atproto.server.getSession", dest: appLocal},
	{phase: "login", method: "GET", nsid: "app.bsky.actor.getPreferences", dest: appLocal},
	{phase: "login", method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor={did}", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.unspecced.getConfig", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.labeler.getServices", query: "dids=did%3Aplc%3Aar7c4by46qjdydhdevvrndac&detailed=true", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.notification.getUnreadCount", query: "priority=false", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.notification.getPreferences", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.graph.getLists", query: "actor={did}&limit=50", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.feed.getFeedGenerators",
		query: "feeds=at%3A%2F%2Fdid%3Aplc%3Az72i7hdynmk6r22z27h6tvur%2Fapp.bsky.feed.generator%2Fwhats-hot", dest: appAppView},
	{phase: "login", method: "GET", nsid: "app.bsky.unspecced.getTrendingTopics", query: "limit=6", dest: appAppView},
	{phase: "login", method: "GET", nsid: "chat.bsky.convo.getLog", proxy: "chat", dest: appChat},
	{phase: "login", method: "GET", nsid: "chat.bsky.convo.listConvos", query: "limit=20&readState=unread&status=accepted", proxy: "chat", dest: appChat},
	{phase: "login", method: "GET", nsid: "com.atproto.server.getServiceAuth",
		query: "aud=did%3Aweb%3Avideo.bsky.app&lxm=app.bsky.video.getUploadLimits", dest: appLocal},
	{phase: "login", method: "GET", nsid: "app.bsky.video.getUploadLimits", dest: appAppView},
	{phase: "login", method: "POST", nsid: "app.bsky.notification.registerPush", dest: appAppView,
		body: `{"serviceDid":"did:web:api.bsky.app","token":"apns-token","platform":"ios","appId":"xyz.blueskyweb.app","ageRestricted":false}`},

	// Home timeline.
	{phase: "timeline", method: "GET", nsid: "app.bsky.feed.getTimeline", query: "limit=30", dest: appAppView},
	{phase: "timeline", method: "GET", nsid: "app.bsky.feed.getFeed",
		query: "feed=at%3A%2F%2Fdid%3Aplc%3Az72i7hdynmk6r22z27h6tvur%2Fapp.bsky.feed.generator%2Fwhats-hot&limit=30", dest: appFeed},
	{phase: "timeline", method: "GET", nsid: "app.bsky.notification.listNotifications", query: "limit=40", dest: appAppView},
	{phase: "timeline", method: "POST", nsid: "app.bsky.notification.updateSeen", body: `{"seenAt":"{now}"}`, dest: appAppView},
	{phase: "timeline", method: "GET", nsid: "app.bsky.feed.getPosts", query: "uris=at%3A%2F%2Fdid%3Aplc%3Abob%2Fapp.bsky.feed.post%2F1", dest: appAppView},

	// Posting with an image.
	{phase: "post", method: "GET", nsid: "app.bsky.actor.searchActorsTypeahead", query: "q=bo&limit=8", dest: appAppView},
	{phase: "post", method: "POST", nsid: "com.atproto.repo.uploadBlob", body: "<image>", dest: appLocal, capture: "blob"},
	{phase: "post", method: "GET", nsid: "com.atproto.server.getServiceAuth",
		query: "aud=did%3Aweb%3Alocalhost&lxm=com.atproto.repo.uploadBlob&exp={exp30}", dest: appLocal},
	{phase: "post", method: "POST", nsid: "com.atproto.repo.applyWrites", dest: appLocal, capture: "post",
		body: `{"repo":"{did}","validate":true,"writes":[{"$type":"com.atproto.repo.applyWrites#create","collection":"app.bsky.feed.post","rkey":"{tid}",
		"value":{"$type":"app.bsky.feed.post","text":"look at this","langs":["en"],"createdAt":"{now}",
		"embed":{"$type":"app.bsky.embed.images","images":[{"alt":"a picture","image":{blob},"aspectRatio":{"width":1000,"height":750}}]}}}]}`},
	{phase: "post", method: "GET", nsid: "app.bsky.feed.getPostThread", query: "uri={post_uri}&depth=10", dest: appAppView},
	{phase: "post", method: "GET", nsid: "app.bsky.unspecced.getPostThreadV2", query: "anchor={post_uri}&below=10", dest: appAppView},
	{phase: "post", method: "POST", nsid: "com.atproto.repo.createRecord", dest: appLocal,
		body: `{"repo":"{did}","collection":"app.bsky.feed.like","record":{"$type":"app.bsky.feed.like","subject":{"uri":"{post_uri}","cid":"{post_cid}"},"createdAt":"{now}"}}`},

	// Opening a profile.
	{phase: "profile", method: "GET", nsid: "com.atproto.identity.resolveHandle", query: "handle=bob.remote.test", dest: appLocal},
	{phase: "profile", method: "GET", nsid: "app.bsky.actor.getProfile", query: "actor=bob.remote.test", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.feed.getAuthorFeed",
		query: "actor=bob.remote.test&filter=posts_and_author_threads&includePins=true&limit=30", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.graph.getActorStarterPacks", query: "actor=bob.remote.test&limit=10", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.feed.getActorFeeds", query: "actor=bob.remote.test", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.graph.getSuggestedFollowsByActor", query: "actor=did%3Aplc%3Abob", dest: appAppView},
	{phase: "profile", method: "POST", nsid: "com.atproto.repo.createRecord", dest: appLocal,
		body: `{"repo":"{did}","collection":"app.bsky.graph.follow","record":{"$type":"app.bsky.graph.follow","subject":"did:plc:bob","createdAt":"{now}"}}`},
	{phase: "profile", method: "GET", nsid: "app.bsky.actor.getProfiles", query: "actors={did}&actors=did%3Aplc%3Abob", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.feed.getAuthorFeed", query: "actor={did}&filter=posts_with_replies&limit=30", dest: appAppView},
	{phase: "profile", method: "GET", nsid: "app.bsky.feed.getActorLikes", query: "actor={did}&limit=30", dest: appAppView},
	{phase: "profile", method: "POST", nsid: "com.atproto.repo.putRecord", dest: appLocal,
		body: `{"repo":"{did}","collection":"app.bsky.actor.profile","rkey":"self","record":{"$type":"app.bsky.actor.profile","displayName":"Alice","description":"hi"}}`},
	{phase: "profile", method: "GET", nsid: "com.atproto.repo.getRecord", query: "repo={did}&collection=app.bsky.actor.profile&rkey=self", dest: appLocal},
	{phase: "profile", method: "POST", nsid: "app.bsky.graph.muteActor", body: `{"actor":"did:plc:bob"}`, dest: appAppView},
	{phase: "profile", method: "POST", nsid: "com.atproto.moderation.createReport", proxy: "mod", dest: appMod,
		body: `{"reasonType":"com.atproto.moderation.defs#reasonSpam","subject":{"$type":"com.atproto.admin.defs#repoRef","did":"did:plc:bob"}}`},

	// Chat.
	{phase: "chat", method: "GET", nsid: "chat.bsky.convo.getConvoAvailability", query: "members=did%3Aplc%3Abob", proxy: "chat", dest: appChat},
	{phase: "chat", method: "GET", nsid: "chat.bsky.convo.getConvoForMembers", query: "members=did%3Aplc%3Abob", proxy: "chat", dest: appChat},
	{phase: "chat", method: "POST", nsid: "chat.bsky.convo.sendMessage", proxy: "chat", dest: appChat,
		body: `{"convoId":"3kconvo","message":{"text":"hello bob"}}`},

	// Preferences.
	{phase: "prefs", method: "GET", nsid: "app.bsky.actor.getPreferences", dest: appLocal},
	{phase: "prefs", method: "POST", nsid: "app.bsky.actor.putPreferences", dest: appLocal,
		body: `{"preferences":[
		{"$type":"app.bsky.actor.defs#savedFeedsPrefV2","items":[{"id":"3l6ovcmm2vd2j","type":"timeline","value":"following","pinned":true}]},
		{"$type":"app.bsky.actor.defs#adultContentPref","enabled":false},
		{"$type":"app.bsky.actor.defs#contentLabelPref","label":"nsfw","visibility":"warn"},
		{"$type":"app.bsky.actor.defs#threadViewPref","sort":"hotness"},
		{"$type":"app.bsky.actor.defs#feedViewPref","feed":"home","hideReplies":false},
		{"$type":"app.bsky.actor.defs#mutedWordsPref","items":[]},
		{"$type":"app.bsky.actor.defs#labelersPref","labelers":[]},
		{"$type":"app.bsky.actor.defs#bskyAppStatePref","nuxs":[{"id":"x","completed":true}]},
		{"$type":"app.bsky.actor.defs#personalDetailsPref","birthDate":"1990-01-01T00:00:00.000Z"}]}`},
	{phase: "prefs", method: "POST", nsid: "app.bsky.notification.putPreferencesV2", dest: appAppView,
		body: `{"reply":{"include":"all","list":true,"push":true}}`},
	{phase: "prefs", method: "GET", nsid: "app.bsky.actor.getPreferences", dest: appLocal, capture: "prefs"},

	// A later start: the session is refreshed.
	{phase: "refresh", method: "POST", nsid: "com.atproto.server.refreshSession", proxy: "none", dest: appLocal, capture: "refresh"},
	{phase: "refresh", method: "GET", nsid: "com.atproto.server.getSession", dest: appLocal},
	{phase: "refresh", method: "GET", nsid: "app.bsky.feed.getTimeline", query: "limit=30", dest: appAppView},
}

const (
	appViewDID        = "did:web:api.bsky.app"
	appChatDID        = "did:web:api.bsky.chat"
	appLabelersHeader = "did:plc:ar7c4by46qjdydhdevvrndac;redact"
)

// TestAppFlow replays appFlow: every call is served here or reaches the
// right service with a valid service JWT; none is 404, MethodNotImplemented
// or 5xx.
func TestAppFlow(t *testing.T) {
	appview := newFakeSvc(t, appViewDID)
	chat := newFakeSvc(t, appChatDID)
	feedgen := newFakeSvc(t, pxFeedgenDID)
	mod := newFakeSvc(t, "did:plc:pending")
	fnet := newPxFakeNet(t)
	s := startServer(t, map[string]string{
		"PDS_BSKY_APP_VIEW_URL":           appview.URL(),
		"PDS_BSKY_APP_VIEW_DID":           appViewDID,
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
	})
	fnet.install(s)
	fnet.addDoc(t, appChatDID, map[string]string{"bsky_chat": chat.URL()})
	fnet.setTXT("_atproto.bob.remote.test", "did=did:plc:bob")
	mod.did = appRegisterLabeler(t, s.plc.URL, mod.URL())
	for _, f := range []*fakeSvc{appview, chat, feedgen, mod} {
		f.trust(s.plc.URL)
	}
	appview.route("com.atproto.repo.getRecord", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(`{"uri":"at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.generator/whats-hot","value":{"did":"` + pxFeedgenDID + `"}}`))
	})
	appview.expectToken("app.bsky.feed.getFeed", pxFeedgenDID, "app.bsky.feed.getFeedSkeleton")

	did, _, _ := s.createAccount(t)
	vars := map[string]string{
		"{did}": did, "{handle}": "alice.test", "{password}": "hunter2-hunter2", "{mod}": mod.did,
		"{exp30}": strconv.FormatInt(time.Now().Unix()+1800, 10),
	}
	var access, refresh string
	proxied, local := 0, 0
	for i, c := range appFlow {
		vars["{now}"] = time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		vars["{tid}"] = syntax.NewTIDNow(0).String()
		pairs := make([]string, 0, 2*len(vars))
		for k, v := range vars {
			pairs = append(pairs, k, v)
		}
		rep := strings.NewReplacer(pairs...)
		name := c.phase + " " + c.method + " " + c.nsid
		hdr := map[string]string{"Atproto-Accept-Labelers": appLabelersHeader}
		switch c.proxy {
		case "", "appview":
			hdr["Atproto-Proxy"] = appViewDID + "#bsky_appview"
		case "chat":
			hdr["Atproto-Proxy"] = appChatDID + "#bsky_chat"
		case "mod":
			hdr["Atproto-Proxy"] = mod.did + "#atproto_labeler"
		}
		var body []byte
		switch {
		case c.body == "<image>":
			body = pngBytes(t, 20000)
			hdr["Content-Type"] = "image/png"
		case c.body != "":
			body = []byte(rep.Replace(c.body))
			if !json.Valid(body) {
				t.Fatalf("%d %s: body is not JSON: %s", i, name, body)
			}
			hdr["Content-Type"] = "application/json"
		}
		token := access
		if c.nsid == "com.atproto.server.refreshSession" {
			token = refresh
		}
		st, _, raw := s.pxDo(t, pxReq{method: c.method, nsid: c.nsid, query: rep.Replace(c.query), token: token, header: hdr, body: body})
		var out map[string]any
		if len(raw) > 0 {
			out = pxJSON(t, name, raw)
		}
		if st != 200 {
			t.Fatalf("%d %s: %d %v", i, name, st, out)
		}

		switch c.capture {
		case "session", "refresh":
			access, refresh = out["accessJwt"].(string), out["refreshJwt"].(string)
		case "blob":
			b, _ := json.Marshal(out["blob"])
			vars["{blob}"] = string(b)
		case "post":
			res := out["results"].([]any)[0].(map[string]any)
			vars["{post_uri}"], vars["{post_cid}"] = res["uri"].(string), res["cid"].(string)
		case "prefs":
			if n := len(out["preferences"].([]any)); n != 9 {
				t.Fatalf("%d %s: %d preferences after putPreferences, want 9", i, name, n)
			}
		}

		want := map[*fakeSvc][]string{}
		switch c.dest {
		case appAppView:
			want[appview] = []string{c.nsid}
		case appChat:
			want[chat] = []string{c.nsid}
		case appMod:
			want[mod] = []string{c.nsid}
		case appFeed:
			want[appview] = []string{"com.atproto.repo.getRecord", c.nsid}
		}
		for _, f := range []*fakeSvc{appview, chat, feedgen, mod} {
			got := f.take()
			if len(got) != len(want[f]) {
				t.Fatalf("%d %s: %s received %d requests, want %v", i, name, f.did, len(got), want[f])
			}
			for j, g := range got {
				if g.NSID != want[f][j] {
					t.Fatalf("%d %s: %s received %s, want %s", i, name, f.did, g.NSID, want[f][j])
				}
				aud, lxm := f.did, g.NSID
				if g.NSID == "app.bsky.feed.getFeed" {
					aud, lxm = pxFeedgenDID, "app.bsky.feed.getFeedSkeleton"
				}
				checkSvcToken(t, name, g, did, aud, lxm)
				if g.RawQuery != rep.Replace(c.query) && g.NSID == c.nsid {
					t.Fatalf("%d %s: query %q, want %q", i, name, g.RawQuery, rep.Replace(c.query))
				}
				if body != nil && !bytes.Equal(g.Body, body) {
					t.Fatalf("%d %s: body changed on the way", i, name)
				}
				if g.NSID == c.nsid && g.Header.Get("Atproto-Accept-Labelers") != appLabelersHeader {
					t.Fatalf("%d %s: atproto-accept-labelers not forwarded", i, name)
				}
				proxied++
			}
		}
		if c.dest == appLocal {
			local++
		}
	}
	t.Logf("%d app calls: %d served here, %d upstream requests, every service JWT verified", len(appFlow), local, proxied)
}

// appRegisterLabeler publishes a did:plc for a moderation service whose
// #atproto_labeler endpoint is url, in the mock PLC directory, and returns
// the DID: the app names the moderation service by its did:plc.
func appRegisterLabeler(t *testing.T, plcURL, url string) string {
	t.Helper()
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	op := &didplc.RegularOp{
		Type:                "plc_operation",
		RotationKeys:        []string{pub.DIDKey()},
		VerificationMethods: map[string]string{"atproto_label": pub.DIDKey()},
		AlsoKnownAs:         []string{"at://mod.test"},
		Services:            map[string]didplc.OpService{"atproto_labeler": {Type: "AtprotoLabeler", Endpoint: url}},
	}
	if err := op.Sign(key); err != nil {
		t.Fatal(err)
	}
	did, err := op.DID()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(op)
	resp, err := http.Post(plcURL+"/"+did, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("registering the labeler: %s", resp.Status)
	}
	return did
}
