package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/repo"
)

// badCase is one malformed request and the XRPC error it must get.
type badCase struct {
	name    string
	rq      rawReq
	status  int
	errName string
	// msg, if set, must appear in the error message.
	msg string
}

// badInputFixture is an account with a post, a post with an image, a
// profile and a record of a collection without a lexicon.
type badInputFixture struct {
	did, access string
	postCID     string // app.bsky.feed.post/seed
	profileCID  string // app.bsky.actor.profile/self
	blob        map[string]any
	colls       []string
}

func setupBadInput(t *testing.T, s *testServer) *badInputFixture {
	t.Helper()
	f := &badInputFixture{colls: []string{"app.bsky.feed.post", "app.bsky.actor.profile", "com.example.thing"}}
	f.did, f.access, _ = s.createAccount(t)
	put := func(coll, rkey string, rec map[string]any) string {
		st, out := s.call(t, "POST", "com.atproto.repo.putRecord", f.access, "", map[string]any{"repo": f.did, "collection": coll, "rkey": rkey, "record": rec})
		wantStatus(t, "putRecord "+coll+"/"+rkey, st, out, 200, "")
		return out["cid"].(string)
	}
	f.postCID = put("app.bsky.feed.post", nameTID("seed"), post("seed"))
	f.profileCID = put("app.bsky.actor.profile", "self", map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Alice"})
	put("com.example.thing", "one", map[string]any{"$type": "com.example.thing", "n": 1})
	st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: bearerAuth(f.access), contentType: "image/png", body: pngBytes(t, 5000)})
	wantStatus(t, "uploadBlob", st, out, 200, "")
	f.blob = out["blob"].(map[string]any)
	withImage := post("with image")
	withImage["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": f.blob}}}
	put("app.bsky.feed.post", nameTID("image"), withImage)
	return f
}

// gzipBytes is b, gzip-compressed.
func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// unknownBlob is a blob reference to bytes never uploaded.
func unknownBlob(t *testing.T) map[string]any {
	t.Helper()
	raw := make([]byte, 100)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{"$type": "blob", "ref": map[string]any{"$link": cid.NewCidV1(cid.Raw, mh).String()}, "mimeType": "image/png", "size": 100}
}

// badInputCases is the table: every write method, every way to get its input
// wrong.
func badInputCases(t *testing.T, f *badInputFixture) []badCase {
	auth := bearerAuth(f.access)
	js := func(nsid string, v any) rawReq {
		return rawReq{method: "POST", nsid: nsid, authz: auth, contentType: "application/json", body: jsonBody(t, v)}
	}
	raw := func(nsid, contentType, body string) rawReq {
		return rawReq{method: "POST", nsid: nsid, authz: auth, contentType: contentType, body: []byte(body)}
	}
	chunked := func(rq rawReq) rawReq { rq.chunked = true; return rq }
	// A post of about n bytes of JSON.
	bigPost := func(n int) map[string]any { return post(strings.Repeat("a", n)) }
	blobPost := func(blob map[string]any) map[string]any {
		p := post("picture")
		p["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "", "image": blob}}}
		return p
	}
	thing := func(fields string) json.RawMessage {
		return json.RawMessage(`{"$type":"com.example.thing"` + fields + `}`)
	}
	headCID := f.postCID // a valid CID that is not the head commit
	badRKeys := []string{".", "..", "a/b", strings.Repeat("k", 513), "with space", "a#b"}
	badColls := []string{"not-an-nsid", "a..b", "com.example", "", "com.example.thing/x"}
	badRepos := []string{"did:plc:someoneelse", "did:x", "not a handle!", "bob.test", ""}

	var cases []badCase
	add := func(name string, rq rawReq, status int, errName, msg string) {
		cases = append(cases, badCase{name, rq, status, errName, msg})
	}
	tooLarge := func(name string, rq rawReq) { add(name, rq, 413, "PayloadTooLarge", "") }
	invalid := func(name string, rq rawReq, msg string) { add(name, rq, 400, "InvalidRequest", msg) }

	// The body: size, encoding, syntax. JSON procedures share decodeJSON, so
	// every method gets the same treatment.
	cr := map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "record": post("x")}
	bodies := map[string]map[string]any{
		"com.atproto.repo.createRecord":        cr,
		"com.atproto.repo.putRecord":           with(cr, map[string]any{"rkey": nameTID("seed")}),
		"com.atproto.repo.deleteRecord":        {"repo": f.did, "collection": "app.bsky.feed.post", "rkey": nameTID("seed")},
		"com.atproto.repo.applyWrites":         {"repo": f.did, "writes": []any{map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": nameTID("seed")}}},
		"com.atproto.server.createAccount":     {"handle": "bob.test", "password": "bob-password"},
		"com.atproto.server.createSession":     {"identifier": "alice.test", "password": "hunter2-hunter2"},
		"com.atproto.server.createAppPassword": {"name": "x"},
	}
	for nsid, body := range bodies {
		valid := string(jsonBody(t, body))
		huge := string(jsonBody(t, with(body, map[string]any{"padding": strings.Repeat("a", 1_000_001)})))
		tooLarge(nsid+": body over 1,000,000 bytes", raw(nsid, "application/json", huge))
		tooLarge(nsid+": body over 1,000,000 bytes, chunked", chunked(raw(nsid, "application/json", huge)))
		if nsid != "com.atproto.repo.createRecord" && nsid != "com.atproto.repo.putRecord" && nsid != "com.atproto.repo.applyWrites" {
			mid := string(jsonBody(t, with(body, map[string]any{"padding": strings.Repeat("a", 160<<10)})))
			tooLarge(nsid+": body over 150 KiB", raw(nsid, "application/json", mid))
		}
		invalid(nsid+": truncated JSON", raw(nsid, "application/json", valid[:len(valid)/2]), "")
		invalid(nsid+": trailing garbage", raw(nsid, "application/json", valid+"x"), "")
		invalid(nsid+": two JSON values", raw(nsid, "application/json", valid+valid), "")
		invalid(nsid+": a closing brace too many", raw(nsid, "application/json", valid+"}"), "")
		invalid(nsid+": text/plain", raw(nsid, "text/plain", valid), "")
		invalid(nsid+": form encoded", raw(nsid, "application/x-www-form-urlencoded", "repo=x"), "")
		invalid(nsid+": empty body", raw(nsid, "application/json", ""), "")
		invalid(nsid+": a JSON array", raw(nsid, "application/json", "[]"), "")
		invalid(nsid+": a JSON string", raw(nsid, "application/json", `"x"`), "")
		invalid(nsid+": not JSON", raw(nsid, "application/json", "\x00\x01\x02"), "")
	}
	invalid("createSession: identifier is a number", js("com.atproto.server.createSession", map[string]any{"identifier": 1, "password": "x"}), "")

	// Collections, record keys and repositories, per method.
	for _, c := range badColls {
		invalid("createRecord: collection "+c, js("com.atproto.repo.createRecord", with(cr, map[string]any{"collection": c})), "")
		invalid("putRecord: collection "+c, js("com.atproto.repo.putRecord", with(cr, map[string]any{"collection": c, "rkey": nameTID("x")})), "")
		invalid("deleteRecord: collection "+c, js("com.atproto.repo.deleteRecord", map[string]any{"repo": f.did, "collection": c, "rkey": nameTID("seed")}), "")
	}
	for _, k := range badRKeys {
		invalid("createRecord: rkey "+k, js("com.atproto.repo.createRecord", with(cr, map[string]any{"rkey": k})), "")
		invalid("putRecord: rkey "+k, js("com.atproto.repo.putRecord", with(cr, map[string]any{"rkey": k})), "")
		invalid("deleteRecord: rkey "+k, js("com.atproto.repo.deleteRecord", map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "rkey": k}), "")
	}
	invalid("putRecord: no rkey", js("com.atproto.repo.putRecord", cr), "")
	invalid("deleteRecord: no rkey", js("com.atproto.repo.deleteRecord", map[string]any{"repo": f.did, "collection": "app.bsky.feed.post"}), "")
	for _, r := range badRepos {
		// A well-formed repo that is not ours is 403 AccountNotFound, as the
		// reference answers; a malformed one is 400 InvalidRequest.
		bad := invalid
		if r == "did:plc:someoneelse" || r == "bob.test" {
			bad = func(name string, rq rawReq, msg string) { add(name, rq, 403, "AccountNotFound", msg) }
		}
		bad("createRecord: repo "+r, js("com.atproto.repo.createRecord", with(cr, map[string]any{"repo": r})), "")
		bad("putRecord: repo "+r, js("com.atproto.repo.putRecord", with(cr, map[string]any{"repo": r, "rkey": nameTID("seed")})), "")
		bad("deleteRecord: repo "+r, js("com.atproto.repo.deleteRecord", map[string]any{"repo": r, "collection": "app.bsky.feed.post", "rkey": nameTID("seed")}), "")
		bad("applyWrites: repo "+r, js("com.atproto.repo.applyWrites", with(bodies["com.atproto.repo.applyWrites"], map[string]any{"repo": r})), "")
	}

	// Records: lexicon and data model.
	noCreatedAt := with(post("x"), map[string]any{"createdAt": nil})
	records := []struct {
		name   string
		coll   string
		record any
		extra  map[string]any
		msg    string
	}{
		{"post without createdAt", "app.bsky.feed.post", noCreatedAt, nil, "createdAt"},
		{"post with a createdAt that is no datetime", "app.bsky.feed.post", with(post("x"), map[string]any{"createdAt": "yesterday"}), nil, "Datetime"},
		{"post text over the lexicon's length", "app.bsky.feed.post", bigPost(5000), nil, ""},
		{"post text a number", "app.bsky.feed.post", with(post("x"), map[string]any{"text": 5}), nil, ""},
		{"profile displayName over 64 graphemes", "app.bsky.actor.profile", map[string]any{"$type": "app.bsky.actor.profile", "displayName": strings.Repeat("é", 65)}, nil, ""},
		{"validate=true on a collection without a lexicon", "com.example.thing", thing(`,"n":1`), map[string]any{"validate": true}, "com.example.thing"},
		{"a float", "com.example.thing", thing(`,"n":1.5`), nil, ""},
		{"a float in an array", "com.example.thing", thing(`,"n":[1,2.5]`), nil, ""},
		{"an exponent with a fraction", "com.example.thing", thing(`,"n":15e-1`), nil, ""},
		{"a bad $link", "com.example.thing", thing(`,"l":{"$link":"not-a-cid"}`), nil, ""},
		{"a $link that is not a string", "com.example.thing", thing(`,"l":{"$link":5}`), nil, ""},
		{"a bad $bytes", "com.example.thing", thing(`,"b":{"$bytes":"!!!not base64"}`), nil, ""},
		{"a blob without a ref", "com.example.thing", thing(`,"b":{"$type":"blob","mimeType":"image/png","size":1}`), nil, ""},
		{"$type of another collection", "com.example.thing", post("x"), nil, ""},
		{"$type not a string", "com.example.thing", json.RawMessage(`{"$type":5}`), nil, ""},
		{"$type empty", "com.example.thing", json.RawMessage(`{"$type":""}`), nil, ""},
		{"a string for a record", "com.example.thing", "hello", nil, ""},
		{"an array for a record", "com.example.thing", []any{1}, nil, ""},
		{"null for a record", "com.example.thing", nil, nil, ""},
		{"validate is a string", "com.example.thing", thing(""), map[string]any{"validate": "yes"}, ""},
	}
	for _, r := range records {
		body := with(cr, map[string]any{"collection": r.coll, "record": r.record})
		if r.record == nil {
			body["record"] = json.RawMessage("null")
		}
		maps.Copy(body, r.extra)
		invalid("createRecord: "+r.name, js("com.atproto.repo.createRecord", body), r.msg)
		invalid("putRecord: "+r.name, js("com.atproto.repo.putRecord", with(body, map[string]any{"rkey": nameTID("new")})), r.msg)
		w := map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": r.coll, "value": body["record"]}
		aw := map[string]any{"repo": f.did, "writes": []any{createWrite(nameTID("ok1"), post("a")), w, createWrite(nameTID("ok2"), post("b"))}}
		if r.extra != nil {
			maps.Copy(aw, r.extra)
		}
		invalid("applyWrites: "+r.name+" in the middle", js("com.atproto.repo.applyWrites", aw), r.msg)
	}

	// Writes that conflict with the repository.
	add("createRecord: swapCommit not the head", js("com.atproto.repo.createRecord", with(cr, map[string]any{"swapCommit": headCID})), 400, "InvalidSwap", "")
	invalid("createRecord: swapCommit not a CID", js("com.atproto.repo.createRecord", with(cr, map[string]any{"swapCommit": "nope"})), "")
	invalid("createRecord: rkey taken", js("com.atproto.repo.createRecord", with(cr, map[string]any{"rkey": nameTID("seed")})), "")
	add("createRecord: blob never uploaded", js("com.atproto.repo.createRecord", with(cr, map[string]any{"record": blobPost(unknownBlob(t))})), 400, "BlobNotFound", "")

	put := with(cr, map[string]any{"rkey": nameTID("seed")})
	add("putRecord: swapRecord mismatch", js("com.atproto.repo.putRecord", with(put, map[string]any{"swapRecord": f.profileCID})), 400, "InvalidSwap", "")
	add("putRecord: swapRecord null but the record exists", js("com.atproto.repo.putRecord", with(put, map[string]any{"swapRecord": json.RawMessage("null")})), 400, "InvalidSwap", "")
	add("putRecord: swapRecord for an absent record", js("com.atproto.repo.putRecord", with(put, map[string]any{"rkey": nameTID("absent"), "swapRecord": f.postCID})), 400, "InvalidSwap", "")
	invalid("putRecord: swapRecord not a CID", js("com.atproto.repo.putRecord", with(put, map[string]any{"swapRecord": "nope"})), "")
	invalid("putRecord: swapRecord a number", js("com.atproto.repo.putRecord", with(put, map[string]any{"swapRecord": 5})), "")
	add("putRecord: swapCommit not the head", js("com.atproto.repo.putRecord", with(put, map[string]any{"swapCommit": headCID})), 400, "InvalidSwap", "")
	add("putRecord: blob never uploaded", js("com.atproto.repo.putRecord", with(put, map[string]any{"record": blobPost(unknownBlob(t))})), 400, "BlobNotFound", "")

	del := map[string]any{"repo": f.did, "collection": "app.bsky.feed.post", "rkey": nameTID("seed")}
	add("deleteRecord: swapRecord mismatch", js("com.atproto.repo.deleteRecord", with(del, map[string]any{"swapRecord": f.profileCID})), 400, "InvalidSwap", "")
	add("deleteRecord: swapRecord for an absent record", js("com.atproto.repo.deleteRecord", with(del, map[string]any{"rkey": nameTID("absent"), "swapRecord": f.postCID})), 400, "InvalidSwap", "")
	add("deleteRecord: swapCommit not the head", js("com.atproto.repo.deleteRecord", with(del, map[string]any{"swapCommit": headCID})), 400, "InvalidSwap", "")
	invalid("deleteRecord: swapRecord not a CID", js("com.atproto.repo.deleteRecord", with(del, map[string]any{"swapRecord": "nope"})), "")

	// applyWrites: batch shape and failures in the middle of a batch.
	many := make([]any, 201)
	for i := range many {
		many[i] = createWrite(testTID(i), post("x"))
	}
	batch := func(ws ...any) rawReq {
		return js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did, "writes": ws})
	}
	invalid("applyWrites: 201 writes", js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did, "writes": many}), "200")
	invalid("applyWrites: no writes", batch(), "")
	invalid("applyWrites: writes missing", js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did}), "")
	invalid("applyWrites: writes an object", js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did, "writes": map[string]any{}}), "")
	invalid("applyWrites: a write that is a string", batch(createWrite(nameTID("ok1"), post("a")), "create"), "")
	invalid("applyWrites: unknown $type in the middle", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#upsert", "collection": "app.bsky.feed.post", "rkey": nameTID("x"), "value": post("x")}, createWrite(nameTID("ok2"), post("b"))), "")
	invalid("applyWrites: no $type in the middle", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"collection": "app.bsky.feed.post", "rkey": nameTID("x"), "value": post("x")}, createWrite(nameTID("ok2"), post("b"))), "")
	for _, c := range badColls {
		invalid("applyWrites: collection "+c+" in the middle", batch(createWrite(nameTID("ok1"), post("a")), with(createWrite(nameTID("x"), post("x")), map[string]any{"collection": c}), createWrite(nameTID("ok2"), post("b"))), "")
	}
	for _, k := range badRKeys {
		invalid("applyWrites: create rkey "+k+" in the middle", batch(createWrite(nameTID("ok1"), post("a")), createWrite(k, post("x")), createWrite(nameTID("ok2"), post("b"))), "")
		invalid("applyWrites: delete rkey "+k+" in the middle", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": k}, createWrite(nameTID("ok2"), post("b"))), "")
	}
	invalid("applyWrites: update without a value", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.feed.post", "rkey": nameTID("seed")}), "")
	invalid("applyWrites: create at a taken rkey in the middle", batch(createWrite(nameTID("ok1"), post("a")), createWrite(nameTID("seed"), post("x")), createWrite(nameTID("ok2"), post("b"))), "")
	invalid("applyWrites: one path twice", batch(createWrite(nameTID("ok1"), post("a")), createWrite(nameTID("ok1"), post("b"))), "")
	add("applyWrites: update of an absent record in the middle", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.feed.post", "rkey": nameTID("absent"), "value": post("x")}, createWrite(nameTID("ok2"), post("b"))), 400, "RecordNotFound", "")
	add("applyWrites: delete of an absent record in the middle", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": nameTID("absent")}, createWrite(nameTID("ok2"), post("b"))), 400, "RecordNotFound", "")
	add("applyWrites: swapCommit not the head", js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did, "swapCommit": headCID, "writes": []any{createWrite(nameTID("ok1"), post("a"))}}), 400, "InvalidSwap", "")
	add("applyWrites: blob never uploaded in the last write", batch(createWrite(nameTID("ok1"), post("a")), createWrite(nameTID("ok2"), blobPost(unknownBlob(t)))), 400, "BlobNotFound", "")
	tooLarge("applyWrites: three records of 900 KB", batch(createWrite(nameTID("big1"), bigPost(900_000)), createWrite(nameTID("big2"), bigPost(900_000)), createWrite(nameTID("big3"), bigPost(900_000))))

	// Record keys against the key type of the collection's lexicon.
	profile := map[string]any{"$type": "app.bsky.actor.profile", "displayName": "Mallory"}
	invalid("createRecord: post at a key that is not a TID", js("com.atproto.repo.createRecord", with(cr, map[string]any{"rkey": "not-a-tid"})), "TID")
	invalid("createRecord: post at a TID-length key of the wrong alphabet", js("com.atproto.repo.createRecord", with(cr, map[string]any{"rkey": "3m00000000000"})), "TID")
	invalid("putRecord: post at a key that is not a TID", js("com.atproto.repo.putRecord", with(cr, map[string]any{"rkey": "not-a-tid"})), "TID")
	invalid("putRecord: profile not at self", js("com.atproto.repo.putRecord", with(cr, map[string]any{"collection": "app.bsky.actor.profile", "rkey": "other", "record": profile})), "self")
	invalid("createRecord: profile without a key (a TID is picked)", js("com.atproto.repo.createRecord", with(cr, map[string]any{"collection": "app.bsky.actor.profile", "record": profile})), "self")
	invalid("putRecord: lexicon schema at a key that is not an NSID", js("com.atproto.repo.putRecord", with(cr, map[string]any{"collection": "com.atproto.lexicon.schema", "rkey": "not-an-nsid", "validate": false,
		"record": map[string]any{"$type": "com.atproto.lexicon.schema", "lexicon": 1}})), "NSID")
	invalid("applyWrites: create of a post at a key that is not a TID in the middle", batch(createWrite(nameTID("ok1"), post("a")), createWrite("not-a-tid", post("x")), createWrite(nameTID("ok2"), post("b"))), "TID")
	invalid("applyWrites: update of a profile not at self", batch(createWrite(nameTID("ok1"), post("a")), map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": "app.bsky.actor.profile", "rkey": "other", "value": profile}), "self")

	// Blob references: the data model and the blob they name.
	blobWith := func(changes map[string]any) map[string]any { return with(f.blob, changes) }
	dagCBORRef := map[string]any{"$link": f.postCID}
	for _, bc := range []struct {
		name, errName, msg string
		blob               map[string]any
	}{
		{"negative size", "InvalidRequest", "size", blobWith(map[string]any{"size": -1})},
		{"negative size, large", "InvalidRequest", "size", blobWith(map[string]any{"size": -5000})},
		{"size a string", "InvalidRequest", "size", blobWith(map[string]any{"size": "5000"})},
		{"size a fraction", "InvalidRequest", "", blobWith(map[string]any{"size": 4999.5})},
		{"$type not blob", "InvalidRequest", "", blobWith(map[string]any{"$type": "blob2"})},
		{"no $type", "InvalidRequest", "", blobWith(map[string]any{"$type": nil})},
		{"ref a dag-cbor CID", "InvalidBlob", "raw", blobWith(map[string]any{"ref": dagCBORRef})},
		{"mime type other than the upload's", "InvalidMimeType", "image/png", blobWith(map[string]any{"mimeType": "image/jpeg"})},
		{"size other than the upload's", "InvalidBlob", "size", blobWith(map[string]any{"size": 1})},
	} {
		add("createRecord: post with a blob: "+bc.name, js("com.atproto.repo.createRecord", with(cr, map[string]any{"record": blobPost(bc.blob)})), 400, bc.errName, bc.msg)
		add("applyWrites: post with a blob: "+bc.name+" in the middle", batch(createWrite(nameTID("ok1"), post("a")), createWrite(nameTID("blob"), blobPost(bc.blob)), createWrite(nameTID("ok2"), post("b"))), 400, bc.errName, bc.msg)
	}
	// Without a lexicon, the blob checks still hold.
	invalid("createRecord: blob with a negative size in a collection without a lexicon", js("com.atproto.repo.createRecord", with(cr, map[string]any{"collection": "com.example.thing",
		"record": map[string]any{"$type": "com.example.thing", "b": blobWith(map[string]any{"size": -1})}})), "size")
	add("createRecord: blob with another mime type in a collection without a lexicon", js("com.atproto.repo.createRecord", with(cr, map[string]any{"collection": "com.example.thing",
		"record": map[string]any{"$type": "com.example.thing", "b": blobWith(map[string]any{"mimeType": "video/mp4"})}})), 400, "InvalidMimeType", "")
	add("putRecord: blob ref a dag-cbor CID in a collection without a lexicon", js("com.atproto.repo.putRecord", with(cr, map[string]any{"collection": "com.example.thing", "rkey": "b",
		"record": map[string]any{"$type": "com.example.thing", "b": blobWith(map[string]any{"ref": dagCBORRef})}})), 400, "InvalidBlob", "")

	// Content negotiation: the reference's answers, nothing written.
	enc := func(rq rawReq, coding string) rawReq {
		rq.headers = map[string]string{"Content-Encoding": coding}
		return rq
	}
	crBody := string(jsonBody(t, cr))
	invalid("createRecord: no Content-Type", raw("com.atproto.repo.createRecord", "", crBody), "Request encoding (Content-Type) required but not provided")
	invalid("createRecord: no Content-Type, no body", raw("com.atproto.repo.createRecord", "", ""), "A request body is expected but none was provided")
	invalid("createRecord: no Content-Type, chunked", chunked(raw("com.atproto.repo.createRecord", "", crBody)), "Request encoding (Content-Type) required but not provided")
	invalid("createSession: no Content-Type", raw("com.atproto.server.createSession", "", string(jsonBody(t, bodies["com.atproto.server.createSession"]))), "Content-Type")
	invalid("createAppPassword: no Content-Type", raw("com.atproto.server.createAppPassword", "", `{"name":"x"}`), "Content-Type")
	for _, coding := range []string{"br", "compress", "zstd", "gzip, br", "x-unknown"} {
		add("createRecord: Content-Encoding "+coding, enc(raw("com.atproto.repo.createRecord", "application/json", crBody), coding), 415, "UnsupportedMediaType", "unsupported content-encoding")
		add("uploadBlob: Content-Encoding "+coding, enc(rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: auth, contentType: "image/png", body: pngBytes(t, 500)}, coding), 415, "UnsupportedMediaType", "")
	}
	gz := gzipBytes(t, []byte(crBody))
	invalid("createRecord: Content-Encoding gzip, body not gzip", enc(raw("com.atproto.repo.createRecord", "application/json", crBody), "gzip"), "")
	invalid("createRecord: Content-Encoding gzip, truncated", enc(raw("com.atproto.repo.createRecord", "application/json", string(gz[:len(gz)/2])), "gzip"), "")
	invalid("createRecord: Content-Encoding deflate, body gzip", enc(raw("com.atproto.repo.createRecord", "application/json", string(gz)), "deflate"), "")
	invalid("uploadBlob: Content-Encoding gzip, body not gzip", enc(rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: auth, contentType: "image/png", body: pngBytes(t, 500)}, "gzip"), "")
	bomb := gzipBytes(t, append([]byte(`{"repo":"`+f.did+`","collection":"com.example.thing","record":{"$type":"com.example.thing","pad":"`), bytes.Repeat([]byte("a"), 20<<20)...))
	tooLarge("createRecord: a gzip body that inflates to 20 MB", enc(raw("com.atproto.repo.createRecord", "application/json", string(bomb)), "gzip"))
	tooLarge("uploadBlob: a gzip body that inflates over the blob limit", enc(rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: auth, contentType: "image/png", body: gzipBytes(t, pngBytes(t, 50_000))}, "gzip"))

	// Decode errors say the field and the lexicon's type.
	invalid("createSession: identifier a number, in lexicon terms", js("com.atproto.server.createSession", map[string]any{"identifier": 1, "password": "x"}), "Input/identifier must be a string")
	invalid("createRecord: validate a string, in lexicon terms", js("com.atproto.repo.createRecord", with(cr, map[string]any{"validate": "yes"})), "Input/validate must be a boolean")
	invalid("createRecord: repo an object", js("com.atproto.repo.createRecord", with(cr, map[string]any{"repo": map[string]any{}})), "Input/repo must be a string")
	invalid("applyWrites: writes an object, in lexicon terms", js("com.atproto.repo.applyWrites", map[string]any{"repo": f.did, "writes": map[string]any{}}), "Input/writes must be an array")
	invalid("applyWrites: a write that is a string, in lexicon terms", batch(createWrite(nameTID("ok1"), post("a")), "create"), "Input/writes/1 must be an object")
	invalid("applyWrites: a write whose collection is a number", batch(map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": 5, "value": post("a")}), "Input/writes/0/collection must be a string")
	invalid("createAppPassword: privileged a string", js("com.atproto.server.createAppPassword", map[string]any{"name": "x", "privileged": "yes"}), "Input/privileged must be a boolean")
	invalid("createRecord: a syntax error says where", raw("com.atproto.repo.createRecord", "application/json", `{"repo": x}`), "at byte")

	// Blobs over the limit (PDS_BLOB_UPLOAD_LIMIT=10000).
	blob := func(n int) rawReq {
		return rawReq{method: "POST", nsid: "com.atproto.repo.uploadBlob", authz: auth, contentType: "image/png", body: pngBytes(t, n)}
	}
	tooLarge("uploadBlob: 20000 bytes", blob(20000))
	tooLarge("uploadBlob: 20000 bytes, chunked", chunked(blob(20000)))
	tooLarge("uploadBlob: 10001 bytes, chunked", chunked(blob(10001)))
	tooLarge("uploadBlob: 2 MB, chunked", chunked(blob(2<<20)))
	return cases
}

// TestCommitTooLarge reaches the 2,000,000-byte bound on a commit's blocks
// with one applyWrites under the 1,000,000-byte body limit: 200 creates of
// about 4 KB each into a repository whose MST has long keys, so that the new
// MST nodes add more than a megabyte.
func TestCommitTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a repository with 7000 records")
	}
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	coll := "com." + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".d"
	rnd := mrand.New(mrand.NewChaCha8([32]byte{1}))
	key := func() string {
		b := make([]byte, 255)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return hex.EncodeToString(b)
	}
	rp, err := s.app.accounts.Repo()
	if err != nil {
		t.Fatal(err)
	}
	for range 35 { // the setup goes straight to the repository: faster
		ws := make([]repo.Write, repo.MaxWrites)
		for i := range ws {
			ws[i] = repo.Write{Action: repo.ActionCreate, Collection: syntax.NSID(coll), RKey: syntax.RecordKey(key()), Record: map[string]any{"$type": coll}}
		}
		if _, err := rp.Apply(context.Background(), ws, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := s.snapshot(t, did, coll)

	writes := make([]any, repo.MaxWrites)
	for i := range writes {
		writes[i] = map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": coll, "rkey": key(),
			"value": map[string]any{"$type": coll, "t": fmt.Sprintf("%03d", i) + strings.Repeat("x", 3800)}} // distinct blocks
	}
	body := jsonBody(t, map[string]any{"repo": did, "writes": writes})
	if len(body) >= 1_000_000 {
		t.Fatalf("the batch is %d bytes, over the body limit", len(body))
	}
	st, out, _ := s.send(t, rawReq{method: "POST", nsid: "com.atproto.repo.applyWrites", authz: bearerAuth(access), contentType: "application/json", body: body})
	wantXRPCError(t, "applyWrites over 2,000,000 bytes of blocks", st, out, 400, "InvalidRequest", "2000000")
	s.wantUnchanged(t, "applyWrites over 2,000,000 bytes of blocks", before, did, coll)
}

func createWrite(rkey string, rec any) map[string]any {
	return map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "rkey": rkey, "value": rec}
}

func TestBadInput(t *testing.T) {
	s := startServerWith(t, map[string]string{"PDS_BLOB_UPLOAD_LIMIT": "10000"}, nil)
	f := setupBadInput(t, s)
	before := s.snapshot(t, f.did, f.colls...)
	if len(before.Records) != 4 || len(before.Blobs) != 1 {
		t.Fatalf("fixture: %+v", before)
	}
	http.DefaultClient.CloseIdleConnections()
	baseline := quietGoroutines()

	for _, tc := range badInputCases(t, f) {
		st, out, _ := s.send(t, tc.rq)
		wantXRPCError(t, tc.name, st, out, tc.status, tc.errName, tc.msg)
		// Messages speak the lexicon's language, never Go's.
		if msg, _ := out["message"].(string); strings.Contains(msg, "Go ") || strings.Contains(msg, "json:") || strings.Contains(msg, "api.") || strings.Contains(msg, "struct") {
			t.Errorf("%s: message leaks Go internals: %q", tc.name, msg)
		}
		before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
	}

	t.Run("truncated blob upload", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			headers string
			body    string
			// halfClose closes only the sending side, so the answer can be
			// read; otherwise the connection is dropped.
			halfClose bool
		}{
			{"Content-Length 5000, 100 bytes, closed", "Content-Length: 5000\r\n", string(pngBytes(t, 100)), false},
			{"Content-Length 5000, 100 bytes, half-closed", "Content-Length: 5000\r\n", string(pngBytes(t, 100)), true},
			{"chunked, cut in a chunk", "Transfer-Encoding: chunked\r\n", "1000\r\n" + string(pngBytes(t, 100)), true},
			{"chunked, no last chunk", "Transfer-Encoding: chunked\r\n", "64\r\n" + string(pngBytes(t, 100)) + "\r\n", true},
			{"chunked, bad chunk size", "Transfer-Encoding: chunked\r\n", "zz\r\n" + string(pngBytes(t, 100)) + "\r\n0\r\n\r\n", true},
		} {
			status := s.rawUpload(t, f.access, tc.headers, tc.body, tc.halfClose)
			if status >= 500 {
				t.Errorf("%s: server error %d", tc.name, status)
			}
			if tc.halfClose && status != 400 {
				t.Errorf("%s: status %d, want 400", tc.name, status)
			}
			// A dropped connection ends the upload on the server's time.
			waitFor(t, tc.name+": no upload left in the blob directory", func() bool { return tmpFiles(t, s) == 0 })
			before = s.wantUnchanged(t, tc.name, before, f.did, f.colls...)
		}
	})

	http.DefaultClient.CloseIdleConnections()
	if n := settledGoroutines(baseline+5, 2*time.Second); n > baseline+5 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the bad input, %d before\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// quietGoroutines waits until the goroutine count has stayed the same for
// 100 ms (connections closing end theirs), for at most 1 s, and returns it.
func quietGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(time.Second); same < 10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

// settledGoroutines polls runtime.NumGoroutine until it is at most want or
// the time is up, and returns the last count.
func settledGoroutines(want int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond for up to 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Errorf("%s: still not true after 2 s", what)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tmpFiles counts the files in the blob store's temp directory.
func tmpFiles(t *testing.T, s *testServer) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.app.cfg.BlobDir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rawUpload sends an uploadBlob request over a bare TCP connection, with
// the extra headers and body as given, then closes the connection (or only
// its sending side) and returns the status answered, 0 if none.
func (s *testServer) rawUpload(t *testing.T, access, headers, body string, halfClose bool) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "POST /xrpc/com.atproto.repo.uploadBlob HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n" +
		"Authorization: Bearer " + access + "\r\n" + headers + "\r\n" + body
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if !halfClose {
		// Close once the server is streaming the body to a temp file.
		waitFor(t, "the upload to start", func() bool { return tmpFiles(t, s) > 0 })
		return 0
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
