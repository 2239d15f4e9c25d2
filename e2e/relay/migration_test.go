package relaye2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/bluesky-social/indigo/cmd/relay/relay/models"
	"github.com/bluesky-social/indigo/cmd/relay/stream"
)

// raw does one request and returns status, body and headers, failing only
// on transport errors. basic sends the admin credentials instead of token.
func (p *pdsProcess) raw(method, path, token, query string, body []byte, contentType string, basic bool) (int, []byte, http.Header) {
	p.t.Helper()
	u := p.base + path
	if query != "" {
		u += "?" + query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if basic {
		req.SetBasicAuth("admin", "relay-e2e-admin")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp.StatusCode, out, resp.Header
}

// ok200 fails the test unless st is 200.
func ok200(t *testing.T, what string, st int, body []byte) {
	t.Helper()
	if st != http.StatusOK {
		t.Fatalf("%s: %d %s", what, st, body)
	}
}

// TestRelayFollowsMigrationIn moves an account from one of our servers (the
// "old PDS") to another with the reference's client flow, while the
// in-process indigo relay follows both hosts. The relay must accept the new
// host's #identity, #account and #sync without a warning, re-emit the
// account's later commits from the new host, and end with the new host's
// head as its view of the repo.
func TestRelayFollowsMigrationIn(t *testing.T) {
	ctx := context.Background()
	plc := newMockPLC(t)
	dir := identity.NewCacheDirectory(&identity.BaseDirectory{PLCURL: plc.URL, SkipHandleVerification: true}, 100, time.Hour, time.Minute, time.Minute)
	rl := startRelay(t, dir)

	old := newPDS(t, plc.URL)
	old.env = append(old.env, "PDS_SERVICE_DID=did:web:old.example")
	old.Start()
	nu := newPDS(t, plc.URL)
	nu.env = append(nu.env, "PDS_SERVICE_DID=did:web:new.example")
	nu.Start()
	rl.SubscribeFrom(t, old.Host, 0)
	rl.SubscribeFrom(t, nu.Host, 0)
	relayOut := collect(t, "relay output", rl.URL, 0)

	// The account on the old server, with records and a blob.
	acct := old.Call("POST", "com.atproto.server.createAccount", "", "", map[string]any{
		"handle": "alice.test", "email": "alice@example.com", "password": "relay-e2e-password",
	}, "")
	did, oldTok := acct["did"].(string), acct["accessJwt"].(string)
	w := &workload{t: t, pds: old, did: did, token: oldTok, clock: syntax.NewTIDClock(0)}
	for i := range 30 {
		w.create("app.bsky.feed.post", post(fmt.Sprintf("old post %d", i)))
	}
	w.postWithImage(10_000)
	oldHead := old.Call("GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil, "")
	if evs, ok := relayOut.WaitFor(relayWait, hasCommit(oldHead["cid"].(string))); !ok {
		t.Fatalf("the relay re-emitted %d commits of the old host before the move", len(commits(evs)))
	}

	// Migration in, as the migration guides script it.
	svc := old.Call("GET", "com.atproto.server.getServiceAuth", oldTok, "aud=did:web:new.example&lxm=com.atproto.server.createAccount", nil, "")
	created := nu.Call("POST", "com.atproto.server.createAccount", svc["token"].(string), "", map[string]any{
		"did": did, "handle": "alice.test", "email": "alice@example.com", "password": "relay-e2e-password",
	}, "")
	nuTok := created["accessJwt"].(string)
	st, car, _ := old.raw("GET", "/xrpc/com.atproto.sync.getRepo", "", "did="+did, nil, "", false)
	ok200(t, "getRepo", st, car)
	st, body, _ := nu.raw("POST", "/xrpc/com.atproto.repo.importRepo", nuTok, "", car, "application/vnd.ipld.car", false)
	ok200(t, "importRepo", st, body)
	missing := nu.Call("GET", "com.atproto.repo.listMissingBlobs", nuTok, "", nil, "")
	for _, b := range missing["blobs"].([]any) {
		c := b.(map[string]any)["cid"].(string)
		st, blob, h := old.raw("GET", "/xrpc/com.atproto.sync.getBlob", "", "did="+did+"&cid="+c, nil, "", false)
		ok200(t, "getBlob", st, blob)
		nu.Call("POST", "com.atproto.repo.uploadBlob", nuTok, "", blob, h.Get("Content-Type"))
	}
	creds := nu.Call("GET", "com.atproto.identity.getRecommendedDidCredentials", nuTok, "", nil, "")
	st, body, _ = old.raw("POST", "/pds/admin/email-tokens", "", "purpose=plc_operation", nil, "", true)
	ok200(t, "plc token", st, body)
	var tok struct {
		Tokens []struct{ Token string }
	}
	if err := json.Unmarshal(body, &tok); err != nil || len(tok.Tokens) != 1 {
		t.Fatalf("plc token: %s (%v)", body, err)
	}
	creds["token"] = tok.Tokens[0].Token
	signed := old.Call("POST", "com.atproto.identity.signPlcOperation", oldTok, "", creds, "")
	st, body, _ = nu.raw("POST", "/xrpc/com.atproto.identity.submitPlcOperation", nuTok, "", mustJSON(t, map[string]any{"operation": signed["operation"]}), "application/json", false)
	ok200(t, "submitPlcOperation", st, body)
	st, body, _ = nu.raw("POST", "/xrpc/com.atproto.server.activateAccount", nuTok, "", nil, "", false)
	ok200(t, "activateAccount", st, body)
	st, body, _ = old.raw("POST", "/xrpc/com.atproto.server.deactivateAccount", oldTok, "", []byte("{}"), "application/json", false)
	ok200(t, "deactivateAccount", st, body)

	// The relay takes the new host's #sync, and the commits after it.
	head := nu.Call("GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil, "")
	syncRev := head["rev"].(string)
	if evs, ok := relayOut.WaitFor(relayWait, func(evs []*stream.XRPCStreamEvent) bool {
		for _, ev := range evs {
			if ev.RepoSync != nil && ev.RepoSync.Did == did && ev.RepoSync.Rev == syncRev {
				return true
			}
		}
		return false
	}); !ok {
		for _, ev := range evs {
			t.Logf("relayed %s", describe(ev))
		}
		t.Fatalf("the relay did not re-emit the new host's #sync at rev %s", syncRev)
	}
	w = &workload{t: t, pds: nu, did: did, token: nuTok, clock: syntax.NewTIDClock(0)}
	for i := range 3 {
		w.create("app.bsky.feed.post", post(fmt.Sprintf("new home post %d", i)))
	}
	head = nu.Call("GET", "com.atproto.sync.getLatestCommit", "", "did="+did, nil, "")
	evs, ok := relayOut.WaitFor(relayWait, hasCommit(head["cid"].(string)))
	if !ok {
		for _, ev := range evs {
			t.Logf("relayed %s", describe(ev))
		}
		t.Fatalf("the relay did not re-emit the new host's commit %s", head["cid"])
	}
	var kinds []string
	for _, ev := range evs {
		if ev.RepoAccount != nil && ev.RepoAccount.Did == did && !ev.RepoAccount.Active {
			t.Errorf("relay emitted an inactive #account after the move: %+v", ev.RepoAccount)
		}
		kinds = append(kinds, kind(ev))
	}
	t.Logf("relayed: %s", strings.Join(kinds, " "))

	// The relay's view: the account on the new host, active, at our head.
	var hostRow models.Host
	if err := rl.DB.Where("hostname = ?", nu.Host).First(&hostRow).Error; err != nil {
		t.Fatal(err)
	}
	var acctRow models.Account
	if err := rl.DB.Where("did = ?", did).First(&acctRow).Error; err != nil {
		t.Fatal(err)
	}
	if acctRow.HostID != hostRow.ID || acctRow.Status != models.AccountStatusActive || acctRow.UpstreamStatus != models.AccountStatusActive {
		t.Fatalf("relay account row %+v, want host %d (%s), active", acctRow, hostRow.ID, nu.Host)
	}
	var repoRow models.AccountRepo
	if err := rl.DB.Where("uid = ?", acctRow.UID).First(&repoRow).Error; err != nil {
		t.Fatal(err)
	}
	if repoRow.Rev != head["rev"] || repoRow.CommitCID != head["cid"] {
		t.Fatalf("relay's repo %+v, our head %v", repoRow, head)
	}
	ident, err := dir.LookupDID(ctx, syntax.DID(did))
	if err != nil || ident.PDSEndpoint() != nu.URL {
		t.Fatalf("relay's identity for %s: %v %v", did, ident, err)
	}
	for _, rec := range rl.Logs.Warnings() {
		switch {
		case relayNoise[rec.Msg]:
		case rec.Msg == "failed handling event" && rec.Attrs["host"] == old.Host && rec.Attrs["eventType"] == "account":
			// The old host's #account (deactivated) comes after the
			// move: the relay rightly refuses it from a host the DID no
			// longer names, and keeps the account active on the new one.
		default:
			t.Errorf("relay warning: %s", rec.Line)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
