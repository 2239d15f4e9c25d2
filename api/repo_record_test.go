package api_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/pdsbox/pds/internal/testpds"
)

const postColl = "app.bsky.feed.post"

func postRecord(text string) map[string]any {
	return map[string]any{"$type": postColl, "text": text, "createdAt": "2026-12-05T00:00:00.000Z"}
}

// answered is a write the API acknowledged with a commit.
type answered struct {
	kind string // "put" or "delete"
	cid  string // the record CID a put answered
}

// Concurrent putRecord and deleteRecord of one key, many rounds: every put
// succeeds, and every acknowledged write is what its #commit op says — a
// put answered with a CID has that CID in its op, as an update (with a
// prev) when the record existed and a create (without) when it did not;
// replaying the ops in firehose order ends at the stored record.
func TestPutDeleteRace(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	did, access, _ := s.CreateAccount(t)
	const rkey = "3kracekey2222"
	path := postColl + "/" + rkey
	rounds := 60
	if testing.Short() {
		rounds = 20
	}
	const workers = 4
	var mu sync.Mutex
	byRev := map[string]answered{}
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds)
	for g := range workers {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := range rounds {
				if (g+i)%2 == 0 {
					// Two texts per writer: some puts are no-op updates.
					st, out := s.Call(t, "POST", "com.atproto.repo.putRecord", access, map[string]any{
						"repo": did, "collection": postColl, "rkey": rkey, "record": postRecord(fmt.Sprintf("%d-%d", g, i%2)),
					})
					if st != 200 {
						errs <- fmt.Sprintf("putRecord: %d %v", st, out)
						continue
					}
					commit, _ := out["commit"].(map[string]any)
					rev, _ := commit["rev"].(string)
					c, _ := out["cid"].(string)
					if rev == "" || c == "" {
						errs <- fmt.Sprintf("putRecord answer %v", out)
						continue
					}
					mu.Lock()
					byRev[rev] = answered{"put", c}
					mu.Unlock()
					continue
				}
				st, out := s.Call(t, "POST", "com.atproto.repo.deleteRecord", access, map[string]any{
					"repo": did, "collection": postColl, "rkey": rkey,
				})
				if st != 200 {
					errs <- fmt.Sprintf("deleteRecord: %d %v", st, out)
					continue
				}
				if commit, ok := out["commit"].(map[string]any); ok {
					mu.Lock()
					byRev[commit["rev"].(string)] = answered{kind: "delete"}
					mu.Unlock()
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		return
	}

	// The firehose from the start: the account's own events, then one
	// #commit per acknowledged write (and nothing else).
	zero := int64(0)
	conn := s.DialFirehose(t, &zero)
	var cur string // the record CID the ops so far leave ("" deleted)
	seen := 0
	for seen < len(byRev) {
		h, body := testpds.ReadFrame(t, conn)
		if h.Op != 1 {
			t.Fatalf("error frame %q", body)
		}
		if h.T != "#commit" {
			continue
		}
		var ev comatproto.SyncSubscribeRepos_Commit
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		a, ok := byRev[ev.Rev]
		if !ok {
			continue // createAccount's first commit
		}
		seen++
		if len(ev.Ops) > 1 {
			t.Fatalf("rev %s: %d ops", ev.Rev, len(ev.Ops))
		}
		if len(ev.Ops) == 0 {
			// A put of the identical record changes nothing.
			if a.kind != "put" || a.cid != cur {
				t.Fatalf("rev %s: answered %+v with no op, record was %q", ev.Rev, a, cur)
			}
			continue
		}
		op := ev.Ops[0]
		prev := ""
		if op.Prev != nil {
			prev = op.Prev.String()
		}
		if op.Path != path || prev != cur {
			t.Fatalf("rev %s: op %s %s prev %q, record was %q", ev.Rev, op.Action, op.Path, prev, cur)
		}
		switch {
		case a.kind == "delete" && op.Action == "delete" && op.Cid == nil && prev != "":
			cur = ""
		case a.kind == "put" && op.Action == "create" && prev == "" && op.Cid != nil && op.Cid.String() == a.cid:
			cur = a.cid
		case a.kind == "put" && op.Action == "update" && prev != "" && op.Cid != nil && op.Cid.String() == a.cid:
			cur = a.cid
		default:
			t.Fatalf("rev %s: answered %+v, committed %s prev %q cid %v", ev.Rev, a, op.Action, prev, op.Cid)
		}
	}
	st, out := s.Call(t, "GET", "com.atproto.repo.getRecord?repo="+did+"&collection="+postColl+"&rkey="+rkey, "", nil)
	switch {
	case cur == "" && st != 400:
		t.Fatalf("ops end deleted, getRecord %d %v", st, out)
	case cur != "" && (st != 200 || out["cid"] != cur):
		t.Fatalf("ops end at %s, getRecord %d %v", cur, st, out)
	}
}

// The CID each write answers comes from repo's per-write result, also for
// no-op updates (which have no op): putRecord and applyWrites answer the
// record's CID, and the record is unchanged.
func TestWriteAnswersNoopUpdate(t *testing.T) {
	s := testpds.Start(t, testpds.Options{})
	did, access, _ := s.CreateAccount(t)
	put := func(rkey, text string) (string, map[string]any) {
		t.Helper()
		st, out := s.Call(t, "POST", "com.atproto.repo.putRecord", access, map[string]any{
			"repo": did, "collection": postColl, "rkey": rkey, "record": postRecord(text),
		})
		if st != 200 {
			t.Fatalf("putRecord: %d %v", st, out)
		}
		return out["cid"].(string), out
	}
	first, _ := put("3knoop2222222", "same")
	again, _ := put("3knoop2222222", "same")
	if again != first {
		t.Fatalf("no-op putRecord answered %s, record is %s", again, first)
	}
	upd := map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": postColl, "rkey": "3knoop2222222", "value": postRecord("same")}
	crt := map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": postColl, "rkey": "3knoop2222223", "value": postRecord("new")}
	dl := map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": postColl, "rkey": "3knoop2222223"}
	st, out := s.Call(t, "POST", "com.atproto.repo.applyWrites", access, map[string]any{"repo": did, "writes": []any{upd, crt}})
	if st != 200 {
		t.Fatalf("applyWrites: %d %v", st, out)
	}
	results, _ := out["results"].([]any)
	if len(results) != 2 {
		t.Fatalf("results %v", out["results"])
	}
	r0, _ := results[0].(map[string]any)
	r1, _ := results[1].(map[string]any)
	if r0["$type"] != "com.atproto.repo.applyWrites#updateResult" || r0["cid"] != first {
		t.Fatalf("no-op update result %v, record is %s", r0, first)
	}
	created, _ := put("3knoop2222223", "new")
	if r1["$type"] != "com.atproto.repo.applyWrites#createResult" || r1["cid"] != created {
		t.Fatalf("create result %v, record is %s", r1, created)
	}
	st, out = s.Call(t, "POST", "com.atproto.repo.applyWrites", access, map[string]any{"repo": did, "writes": []any{dl}})
	results, _ = out["results"].([]any)
	if st != 200 || len(results) != 1 || results[0].(map[string]any)["$type"] != "com.atproto.repo.applyWrites#deleteResult" {
		t.Fatalf("delete: %d %v", st, out)
	}
	// swapRecord null: the record must not exist (InvalidSwap if it does).
	st, out = s.Call(t, "POST", "com.atproto.repo.putRecord", access, map[string]any{
		"repo": did, "collection": postColl, "rkey": "3knoop2222222", "record": postRecord("x"), "swapRecord": nil,
	})
	if st != 400 || out["error"] != "InvalidSwap" {
		t.Fatalf("swapRecord null on an existing record: %d %v", st, out)
	}
}
