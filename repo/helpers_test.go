package repo

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	lexutil "github.com/bluesky-social/indigo/lex/util"
	bolt "go.etcd.io/bbolt"
)

const testDID = syntax.DID("did:plc:w4xbfzo7kqfes5zb7r6qv3rw")

// testRepo is a repository in a real bbolt file in a temp dir.
type testRepo struct {
	*Repo
	db   *bolt.DB
	path string
	key  atcrypto.PrivateKeyExportable
}

func newTestRepo(t testing.TB, opts Options) *testRepo {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pds.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(db, testDID, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testRepo{Repo: r, db: db, path: path, key: key}
}

func post(text string) map[string]any {
	return map[string]any{"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-29T00:00:00.000Z"}
}

func create(coll, rkey string, rec map[string]any) Write {
	return Write{Action: ActionCreate, Collection: syntax.NSID(coll), RKey: syntax.RecordKey(rkey), Record: rec}
}

func update(coll, rkey string, rec map[string]any) Write {
	return Write{Action: ActionUpdate, Collection: syntax.NSID(coll), RKey: syntax.RecordKey(rkey), Record: rec}
}

func del(coll, rkey string) Write {
	return Write{Action: ActionDelete, Collection: syntax.NSID(coll), RKey: syntax.RecordKey(rkey)}
}

// firehoseCommit wraps a Commit as the #commit event the sequencer will send.
func firehoseCommit(c *Commit) *comatproto.SyncSubscribeRepos_Commit {
	ev := &comatproto.SyncSubscribeRepos_Commit{
		Repo:   c.DID.String(),
		Commit: lexutil.LexLink(c.CID),
		Rev:    c.Rev,
		Since:  c.Since,
		Blocks: lexutil.LexBytes(c.CAR),
		Time:   syntax.DatetimeNow().String(),
		Ops:    []*comatproto.SyncSubscribeRepos_RepoOp{},
		Blobs:  []lexutil.LexLink{},
	}
	if c.PrevData != nil {
		l := lexutil.LexLink(*c.PrevData)
		ev.PrevData = &l
	}
	for _, o := range c.Ops {
		op := &comatproto.SyncSubscribeRepos_RepoOp{Action: string(o.Action), Path: o.Path()}
		if o.CID != nil {
			l := lexutil.LexLink(*o.CID)
			op.Cid = &l
		}
		if o.Prev != nil {
			l := lexutil.LexLink(*o.Prev)
			op.Prev = &l
		}
		ev.Ops = append(ev.Ops, op)
	}
	for _, b := range c.Blobs {
		ev.Blobs = append(ev.Blobs, lexutil.LexLink(b))
	}
	return ev
}

// verifyCommit checks a commit the way a sync-1.1 relay does, with indigo as
// the oracle, plus the invariants indigo leaves to the caller.
func verifyCommit(t testing.TB, c *Commit, pub atcrypto.PublicKey, prev *Commit) {
	t.Helper()
	ctx := context.Background()
	ev := firehoseCommit(c)
	if _, err := irepo.VerifyCommitMessage(ctx, ev); err != nil {
		t.Fatalf("rev %s: VerifyCommitMessage: %v", c.Rev, err)
	}
	sc, root, err := irepo.LoadCommitFromCAR(ctx, bytes.NewReader(c.CAR))
	if err != nil {
		t.Fatal(err)
	}
	if *root != c.CID {
		t.Fatalf("CAR root %s, commit %s", root, c.CID)
	}
	if err := sc.VerifySignature(pub); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if sc.Rev != c.Rev || sc.Data != c.Data || sc.DID != c.DID.String() || sc.Prev != nil {
		t.Fatalf("commit object %+v does not match %+v", sc, c)
	}
	for _, o := range c.Ops {
		if (o.Action == ActionUpdate || o.Action == ActionDelete) && o.Prev == nil {
			t.Fatalf("%s %s without prev", o.Action, o.Path())
		}
		if o.Action == ActionCreate && o.Prev != nil {
			t.Fatalf("create %s with prev", o.Path())
		}
	}
	if len(c.Ops) > MaxWrites {
		t.Fatalf("%d ops", len(c.Ops))
	}
	if prev != nil {
		if c.Since == nil || *c.Since != prev.Rev {
			t.Fatalf("since %v, previous rev %s", c.Since, prev.Rev)
		}
		if c.PrevData == nil || *c.PrevData != prev.Data {
			t.Fatalf("prevData %v, previous data %s", c.PrevData, prev.Data)
		}
		if c.Rev <= prev.Rev {
			t.Fatalf("rev %s not after %s", c.Rev, prev.Rev)
		}
	}
}

func mustApply(t testing.TB, r *testRepo, writes ...Write) *Commit {
	t.Helper()
	c, err := r.Apply(context.Background(), writes, nil)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return c
}

var _ = fmt.Sprint
