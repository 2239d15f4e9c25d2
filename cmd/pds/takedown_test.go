package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAdminTakedown: the operator's takedowns of the account, a record and
// a blob, as pdsadmin sends them, and their reversal.
func TestAdminTakedown(t *testing.T) {
	ts := startServer(t, nil)
	did, access, refresh := ts.createAccount(t)
	admin := basicAuth("admin", testAdminPassword)
	call := func(method, nsid, query string, body any) (int, map[string]any) {
		t.Helper()
		return ts.adminCall(t, admin, method, nsid, query, body)
	}
	fh := fhSubscribe(t, strings.TrimPrefix(ts.URL, "http://"), "0")

	// A record with an image, and a plain one.
	img := pngBytes(t, 3000)
	st, raw, _ := ts.callRaw(t, "POST", "com.atproto.repo.uploadBlob", access, "", img, "image/png")
	var up map[string]any
	_ = json.Unmarshal(raw, &up)
	wantStatus(t, "uploadBlob", st, up, 200, "")
	blob := up["blob"].(map[string]any)
	blobCID := blob["ref"].(map[string]any)["$link"].(string)
	withImage := post("look")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "a picture", "image": blob}}}
	st, rec1 := ts.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": withImage})
	wantStatus(t, "createRecord", st, rec1, 200, "")
	st, rec2 := ts.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("plain")})
	wantStatus(t, "createRecord", st, rec2, 200, "")
	uri1 := rec1["uri"].(string)
	rkey1 := uri1[strings.LastIndexByte(uri1, '/')+1:]

	// Record takedown: hidden from getRecord and listRecords, still in the repo.
	st, out := call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.repo.strongRef", "uri": uri1, "cid": rec1["cid"]},
		"takedown": map[string]any{"applied": true, "ref": "TICKET-1"},
	})
	wantStatus(t, "updateSubjectStatus record", st, out, 200, "")
	st, out = ts.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+did+"&collection=app.bsky.feed.post&rkey="+rkey1, nil)
	wantStatus(t, "getRecord of a taken-down record", st, out, 400, "RecordNotFound")
	st, out = ts.call(t, "GET", "com.atproto.repo.listRecords", "", "repo="+did+"&collection=app.bsky.feed.post", nil)
	wantStatus(t, "listRecords", st, out, 200, "")
	if recs := out["records"].([]any); len(recs) != 1 || recs[0].(map[string]any)["uri"] != rec2["uri"] {
		t.Fatalf("listRecords with a taken-down record = %v", out)
	}
	st, out = call("GET", "com.atproto.admin.getSubjectStatus", "uri="+uri1, nil)
	wantStatus(t, "getSubjectStatus record", st, out, 200, "")
	if td := out["takedown"].(map[string]any); td["applied"] != true || td["ref"] != "TICKET-1" || out["subject"].(map[string]any)["cid"] != rec1["cid"] {
		t.Fatalf("getSubjectStatus record = %v", out)
	}
	st, out = call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.repo.strongRef", "uri": uri1, "cid": rec1["cid"]},
		"takedown": map[string]any{"applied": false},
	})
	wantStatus(t, "reverse record takedown", st, out, 200, "")
	st, out = ts.call(t, "GET", "com.atproto.repo.getRecord", "", "repo="+did+"&collection=app.bsky.feed.post&rkey="+rkey1, nil)
	wantStatus(t, "getRecord after reversal", st, out, 200, "")

	// Blob takedown.
	st, out = call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoBlobRef", "did": did, "cid": blobCID},
		"takedown": map[string]any{"applied": true},
	})
	wantStatus(t, "updateSubjectStatus blob", st, out, 200, "")
	st, out = ts.call(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+blobCID, nil)
	wantStatus(t, "getBlob of a taken-down blob", st, out, 400, "BlobNotFound")
	st, out = call("GET", "com.atproto.admin.getSubjectStatus", "did="+did+"&blob="+blobCID, nil)
	if st != 200 || out["takedown"].(map[string]any)["applied"] != true {
		t.Fatalf("getSubjectStatus blob = %d %v", st, out)
	}
	st, out = call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoBlobRef", "did": did, "cid": blobCID},
		"takedown": map[string]any{"applied": false},
	})
	wantStatus(t, "reverse blob takedown", st, out, 200, "")
	if st, _, _ := ts.callRaw(t, "GET", "com.atproto.sync.getBlob", "", "did="+did+"&cid="+blobCID, nil, ""); st != 200 {
		t.Fatalf("getBlob after reversal: %d", st)
	}

	// Account takedown, as pdsadmin sends it.
	st, out = call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": did},
		"takedown": map[string]any{"applied": true, "ref": "1700000000"},
	})
	wantStatus(t, "takedown", st, out, 200, "")
	fh.waitUntil(t, "#account takendown", func(fs []fhFrame) bool {
		for _, f := range fs {
			if a := f.Account; a != nil && a.Did == did && !a.Active && a.Status != nil && *a.Status == "takendown" {
				return true
			}
		}
		return false
	})
	st, out = call("GET", "com.atproto.admin.getSubjectStatus", "did="+did, nil)
	wantStatus(t, "getSubjectStatus account", st, out, 200, "")
	if td := out["takedown"].(map[string]any); td["applied"] != true || td["ref"] != "1700000000" {
		t.Fatalf("getSubjectStatus account = %v", out)
	}
	for _, q := range []struct{ nsid, query string }{
		{"com.atproto.sync.getRepo", "did=" + did},
		{"com.atproto.sync.getLatestCommit", "did=" + did},
		{"com.atproto.sync.getRecord", "did=" + did + "&collection=app.bsky.feed.post&rkey=" + rkey1},
		{"com.atproto.sync.listBlobs", "did=" + did},
		{"com.atproto.sync.getBlob", "did=" + did + "&cid=" + blobCID},
	} {
		st, out := ts.call(t, "GET", q.nsid, "", q.query, nil)
		wantStatus(t, q.nsid+" of a taken-down account", st, out, 400, "RepoTakendown")
	}
	st, out = ts.call(t, "GET", "com.atproto.sync.getRepoStatus", "", "did="+did, nil)
	wantStatus(t, "getRepoStatus", st, out, 200, "")
	if out["active"] != false || out["status"] != "takendown" {
		t.Fatalf("getRepoStatus of a taken-down account = %v", out)
	}
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	wantStatus(t, "createSession of a taken-down account", st, out, 401, "AccountTakedown")
	if st, out := ts.call(t, "GET", "com.atproto.server.getSession", access, "", nil); st == 200 {
		t.Fatalf("a session of a taken-down account works: %v", out)
	}
	st, out = ts.call(t, "POST", "com.atproto.server.refreshSession", refresh, "", nil)
	if st == 200 {
		t.Fatalf("refreshSession of a taken-down account: %v", out)
	}

	// Untakedown restores everything but the ended sessions.
	st, out = call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{
		"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": did},
		"takedown": map[string]any{"applied": false},
	})
	wantStatus(t, "untakedown", st, out, 200, "")
	fh.waitUntil(t, "#account active", func(fs []fhFrame) bool {
		seen := false
		for _, f := range fs {
			if a := f.Account; a != nil && a.Did == did {
				seen = a.Active
			}
		}
		return seen
	})
	for _, q := range []struct{ nsid, query string }{
		{"com.atproto.sync.getLatestCommit", "did=" + did},
		{"com.atproto.sync.getRecord", "did=" + did + "&collection=app.bsky.feed.post&rkey=" + rkey1},
		{"com.atproto.sync.listBlobs", "did=" + did},
	} {
		st, raw, _ := ts.callRaw(t, "GET", q.nsid, "", q.query, nil, "")
		if st != 200 {
			t.Fatalf("%s after untakedown: %d %s", q.nsid, st, raw)
		}
	}
	st, out = ts.call(t, "GET", "com.atproto.sync.getRepoStatus", "", "did="+did, nil)
	if out["active"] != true {
		t.Fatalf("getRepoStatus after untakedown = %v", out)
	}
	st, out = ts.call(t, "POST", "com.atproto.server.createSession", "", "", map[string]any{"identifier": "alice.test", "password": "hunter2-hunter2"})
	wantStatus(t, "createSession after untakedown", st, out, 200, "")
	st, out = ts.call(t, "POST", "com.atproto.repo.createRecord", out["accessJwt"].(string), "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("back")})
	wantStatus(t, "createRecord after untakedown", st, out, 200, "")

	// Bad subjects.
	for _, sub := range []map[string]any{
		{"$type": "com.atproto.admin.defs#repoRef", "did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"},
		{"$type": "com.atproto.repo.strongRef", "uri": "not-a-uri", "cid": "x"},
		{"$type": "com.atproto.admin.defs#repoBlobRef", "did": did, "cid": "nope"},
		{"$type": "com.example.other"},
	} {
		st, out := call("POST", "com.atproto.admin.updateSubjectStatus", "", map[string]any{"subject": sub, "takedown": map[string]any{"applied": true}})
		if st != 400 {
			t.Errorf("updateSubjectStatus %v: %d %v", sub, st, out)
		}
	}
}
