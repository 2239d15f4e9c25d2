package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	blockstore "github.com/ipfs/go-ipfs-blockstore"
	carv2 "github.com/ipld/go-car/v2"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// fhFrame is one firehose message as received: its raw bytes, header and
// decoded body.
type fhFrame struct {
	Raw  []byte
	Op   int64
	T    string
	Seq  int64
	Body []byte

	Commit   *comatproto.SyncSubscribeRepos_Commit
	Sync     *comatproto.SyncSubscribeRepos_Sync
	Identity *comatproto.SyncSubscribeRepos_Identity
	Account  *comatproto.SyncSubscribeRepos_Account
	Info     *comatproto.SyncSubscribeRepos_Info
}

// fhParse decodes a frame: the header with cbor-gen, the body with
// indigo's types.
func fhParse(msg []byte) (fhFrame, error) {
	f := fhFrame{Raw: msg}
	r := bytes.NewReader(msg)
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	if err != nil || maj != cbg.MajMap {
		return f, fmt.Errorf("frame header: major %d, %v", maj, err)
	}
	for range n {
		k, err := cbg.ReadString(cr)
		if err != nil {
			return f, err
		}
		switch k {
		case "op":
			maj, v, err := cr.ReadHeader()
			if err != nil {
				return f, err
			}
			f.Op = int64(v)
			if maj == cbg.MajNegativeInt {
				f.Op = -1 - int64(v)
			}
		case "t":
			if f.T, err = cbg.ReadString(cr); err != nil {
				return f, err
			}
		default:
			return f, fmt.Errorf("header key %q", k)
		}
	}
	f.Body = msg[len(msg)-r.Len():]
	if f.Op != 1 {
		return f, nil
	}
	br := bytes.NewReader(f.Body)
	switch f.T {
	case "#commit":
		f.Commit = &comatproto.SyncSubscribeRepos_Commit{}
		err = f.Commit.UnmarshalCBOR(br)
		f.Seq = f.Commit.Seq
	case "#sync":
		f.Sync = &comatproto.SyncSubscribeRepos_Sync{}
		err = f.Sync.UnmarshalCBOR(br)
		f.Seq = f.Sync.Seq
	case "#identity":
		f.Identity = &comatproto.SyncSubscribeRepos_Identity{}
		err = f.Identity.UnmarshalCBOR(br)
		f.Seq = f.Identity.Seq
	case "#account":
		f.Account = &comatproto.SyncSubscribeRepos_Account{}
		err = f.Account.UnmarshalCBOR(br)
		f.Seq = f.Account.Seq
	case "#info":
		f.Info = &comatproto.SyncSubscribeRepos_Info{}
		err = f.Info.UnmarshalCBOR(br)
	default:
		return f, fmt.Errorf("unknown message type %q", f.T)
	}
	if err == nil && br.Len() != 0 {
		err = fmt.Errorf("%d trailing bytes", br.Len())
	}
	if err != nil {
		return f, fmt.Errorf("%s body: %w", f.T, err)
	}
	return f, nil
}

// fhReader follows subscribeRepos on one websocket in the background,
// keeping every frame.
type fhReader struct {
	conn *websocket.Conn
	mu   sync.Mutex
	fs   []fhFrame
	err  error
	done chan struct{}
}

// fhSubscribe dials subscribeRepos on host (host:port); cursor "" means
// live only.
func fhSubscribe(t *testing.T, host, cursor string) *fhReader {
	t.Helper()
	u := "ws://" + host + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor != "" {
		u += "?cursor=" + cursor
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	resp.Body.Close()
	r := &fhReader{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, msg, err := conn.ReadMessage()
			var f fhFrame
			if err == nil {
				f, err = fhParse(msg)
			}
			r.mu.Lock()
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			r.fs = append(r.fs, f)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { r.close() })
	return r
}

func (r *fhReader) close() {
	r.conn.Close()
	<-r.done
}

func (r *fhReader) frames() ([]fhFrame, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.fs), r.err
}

// waitUntil polls until ok holds for the frames received so far.
func (r *fhReader) waitUntil(t *testing.T, what string, ok func([]fhFrame) bool) []fhFrame {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		fs, err := r.frames()
		if ok(fs) {
			return fs
		}
		if err != nil {
			t.Fatalf("waiting for %s: stream ended after %d frames: %v", what, len(fs), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %d frames", what, len(fs))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fhHasRev: the frames include the #commit of rev.
func fhHasRev(rev string) func([]fhFrame) bool {
	return func(fs []fhFrame) bool {
		for i := len(fs) - 1; i >= 0; i-- {
			if fs[i].Commit != nil && fs[i].Commit.Rev == rev {
				return true
			}
		}
		return false
	}
}

// fhCARBlocks reads a CAR v1, checking every block against its CID.
func fhCARBlocks(car []byte) (roots []cid.Cid, bs map[cid.Cid][]byte, err error) {
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		return nil, nil, err
	}
	if br.Version != 1 {
		return nil, nil, fmt.Errorf("CAR version %d", br.Version)
	}
	bs = map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			return br.Roots, bs, nil
		}
		if err != nil {
			return nil, nil, err
		}
		sum, err := b.Cid().Prefix().Sum(b.RawData())
		if err != nil || !sum.Equals(b.Cid()) {
			return nil, nil, fmt.Errorf("block %s does not hash to its CID (%v)", b.Cid(), err)
		}
		if _, dup := bs[b.Cid()]; dup {
			return nil, nil, fmt.Errorf("block %s twice", b.Cid())
		}
		bs[b.Cid()] = b.RawData()
	}
}

// fhBlockSource serves blocks from a map to indigo's MST loader.
func fhBlockSource(bs map[cid.Cid][]byte) *irepo.TinyBlockstore {
	out := irepo.NewTinyBlockstore()
	for c, data := range bs {
		b, _ := blocks.NewBlockWithCid(data, c)
		_ = out.Put(context.Background(), b)
	}
	return out
}

// fhTreeMap walks a complete tree into a map of path → record CID.
func fhTreeMap(tree *imst.Tree) (map[string]cid.Cid, error) {
	if tree.IsPartial() {
		return nil, errors.New("the tree is partial")
	}
	m := map[string]cid.Cid{}
	err := tree.Walk(func(k []byte, v cid.Cid) error {
		m[string(k)] = v
		return nil
	})
	return m, err
}

// fhRootOf recomputes an MST root from scratch from its contents.
func fhRootOf(m map[string]cid.Cid) (cid.Cid, error) {
	if len(m) == 0 {
		t := imst.NewEmptyTree()
		c, err := t.RootCID()
		if err != nil {
			return cid.Undef, err
		}
		return *c, nil
	}
	t, err := imst.LoadTreeFromMap(m)
	if err != nil {
		return cid.Undef, err
	}
	c, err := t.RootCID()
	if err != nil {
		return cid.Undef, err
	}
	return *c, nil
}

// fhChecker verifies a firehose from seq 1 of our one account, event by
// event, with indigo and the invariants indigo skips, keeping a model of
// the repository.
type fhChecker struct {
	did     string
	handle  string
	handles []string // the handles #identity events must announce, in order
	pub     atcrypto.PublicKey
	dir     identity.Directory
	blobsOf map[string][]string // record CID → blob CIDs it references

	lastSeq   int64
	rev       string
	data      *cid.Cid
	head      cid.Cid
	records   map[string]cid.Cid
	commits   []fhCommit
	syncs     int
	idents    int
	accounts  int
	maxOps    int
	maxBlocks int
	blobSeen  int
}

type fhCommit struct {
	Seq int64
	CID string
	Rev string
}

func newFHChecker(did, handle string, pub atcrypto.PublicKey) *fhChecker {
	dir := identity.NewMockDirectory()
	dir.Insert(identity.Identity{
		DID:    syntax.DID(did),
		Handle: syntax.Handle(handle),
		Keys:   map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: pub.Multibase()}},
	})
	return &fhChecker{did: did, handle: handle, handles: []string{handle}, pub: pub, dir: dir, blobsOf: map[string][]string{}, records: map[string]cid.Cid{}}
}

func fhSigningPub(t *testing.T, a *app) atcrypto.PublicKey {
	t.Helper()
	key, err := a.accounts.SigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func (c *fhChecker) check(f fhFrame) error {
	if f.Op != 1 {
		return fmt.Errorf("error frame %q", f.Body)
	}
	if f.Seq != c.lastSeq+1 {
		return fmt.Errorf("%s seq %d after %d", f.T, f.Seq, c.lastSeq)
	}
	c.lastSeq = f.Seq
	switch {
	case f.Commit != nil:
		return c.checkCommit(f.Commit)
	case f.Sync != nil:
		c.syncs++
		ev := f.Sync
		commit, err := irepo.VerifySyncMessage(context.Background(), c.dir, ev)
		if err != nil {
			return fmt.Errorf("#sync %d: VerifySyncMessage: %w", ev.Seq, err)
		}
		_, ccid, err := irepo.LoadCommitFromCAR(context.Background(), bytes.NewReader(ev.Blocks))
		if err != nil {
			return err
		}
		if _, err := syntax.ParseDatetime(ev.Time); err != nil {
			return err
		}
		if err := commit.VerifySignature(c.pub); err != nil {
			return fmt.Errorf("#sync %d: signature: %w", ev.Seq, err)
		}
		if ev.Did != c.did || commit.DID != c.did || ev.Rev != commit.Rev || ev.Rev != c.rev || *ccid != c.head ||
			c.data == nil || commit.Data != *c.data || len(ev.Blocks) > 10000 {
			return fmt.Errorf("#sync %d: did %s rev %s (commit %s, head %s) commit %s (head %s)", ev.Seq, ev.Did, ev.Rev, commit.Rev, c.rev, ccid, c.head)
		}
	case f.Identity != nil:
		c.idents++
		ev := f.Identity
		if _, err := syntax.ParseDatetime(ev.Time); err != nil {
			return err
		}
		// Each #identity announces the next expected handle, once.
		if ev.Did != c.did || ev.Handle == nil || len(c.handles) == 0 || *ev.Handle != c.handles[0] {
			return fmt.Errorf("#identity %+v, expected handles %v", ev, c.handles)
		}
		c.handles = c.handles[1:]
	case f.Account != nil:
		c.accounts++
		ev := f.Account
		if _, err := syntax.ParseDatetime(ev.Time); err != nil {
			return err
		}
		if ev.Did != c.did || !ev.Active || ev.Status != nil {
			return fmt.Errorf("#account %+v", ev)
		}
	default:
		return fmt.Errorf("unexpected %s frame", f.T)
	}
	return nil
}

func (c *fhChecker) checkCommit(ev *comatproto.SyncSubscribeRepos_Commit) error {
	ctx := context.Background()
	fail := func(format string, args ...any) error {
		return fmt.Errorf("#commit seq %d rev %s: %s", ev.Seq, ev.Rev, fmt.Sprintf(format, args...))
	}
	if ev.Repo != c.did || ev.TooBig || ev.Rebase {
		return fail("repo %s tooBig %v rebase %v", ev.Repo, ev.TooBig, ev.Rebase)
	}
	if len(ev.Ops) > 200 || len(ev.Blocks) > 2_000_000 {
		return fail("%d ops, %d bytes of blocks", len(ev.Ops), len(ev.Blocks))
	}
	c.maxOps, c.maxBlocks = max(c.maxOps, len(ev.Ops)), max(c.maxBlocks, len(ev.Blocks))
	if _, err := irepo.VerifyCommitMessage(ctx, ev); err != nil {
		return fail("VerifyCommitMessage: %v", err)
	}
	if err := irepo.VerifyCommitSignature(ctx, c.dir, ev); err != nil {
		return fail("VerifyCommitSignature: %v", err)
	}
	roots, bs, err := fhCARBlocks(ev.Blocks)
	if err != nil {
		return fail("blocks: %v", err)
	}
	evCommit := cid.Cid(ev.Commit)
	if len(roots) != 1 || roots[0] != evCommit || bs[evCommit] == nil {
		return fail("CAR roots %v, commit %s", roots, evCommit)
	}
	commit, ccid, err := irepo.LoadCommitFromCAR(ctx, bytes.NewReader(ev.Blocks))
	if err != nil {
		return fail("LoadCommitFromCAR: %v", err)
	}
	if err := commit.VerifySignature(c.pub); err != nil {
		return fail("signature: %v", err)
	}
	if *ccid != evCommit || commit.Rev != ev.Rev || commit.DID != c.did || commit.Version != 3 || commit.Prev != nil {
		return fail("commit %s %+v", ccid, commit)
	}
	if c.rev == "" {
		if ev.Since != nil || ev.PrevData != nil {
			return fail("first commit with since %v prevData %v", ev.Since, ev.PrevData)
		}
	} else {
		if ev.Rev <= c.rev {
			return fail("rev not after %s", c.rev)
		}
		if ev.Since == nil || *ev.Since != c.rev {
			return fail("since %v, previous rev %s", ev.Since, c.rev)
		}
		if ev.PrevData == nil || cid.Cid(*ev.PrevData) != *c.data {
			return fail("prevData %v, previous data %s", ev.PrevData, c.data)
		}
	}
	wantBlobs := map[string]bool{}
	for _, op := range ev.Ops {
		if _, _, err := syntax.ParseRepoPath(op.Path); err != nil {
			return fail("op path %q: %v", op.Path, err)
		}
		cur, exists := c.records[op.Path]
		switch op.Action {
		case "create":
			if exists || op.Cid == nil || op.Prev != nil {
				return fail("create %s: exists %v cid %v prev %v", op.Path, exists, op.Cid, op.Prev)
			}
		case "update", "delete":
			if !exists || op.Prev == nil || cid.Cid(*op.Prev) != cur {
				return fail("%s %s: prev %v, record was %s", op.Action, op.Path, op.Prev, cur)
			}
			if (op.Action == "update") != (op.Cid != nil) {
				return fail("%s %s with cid %v", op.Action, op.Path, op.Cid)
			}
		default:
			return fail("action %q", op.Action)
		}
		if op.Cid == nil {
			delete(c.records, op.Path)
			continue
		}
		rc := cid.Cid(*op.Cid)
		if bs[rc] == nil {
			return fail("record block %s of %s missing", rc, op.Path)
		}
		c.records[op.Path] = rc
		for _, b := range c.blobsOf[rc.String()] {
			wantBlobs[b] = true
		}
	}
	gotBlobs := map[string]bool{}
	for _, b := range ev.Blobs {
		gotBlobs[cid.Cid(b).String()] = true
	}
	if len(gotBlobs) != len(ev.Blobs) || len(gotBlobs) != len(wantBlobs) {
		return fail("blobs %v, want %v", gotBlobs, wantBlobs)
	}
	for b := range wantBlobs {
		if !gotBlobs[b] {
			return fail("blob %s not listed", b)
		}
	}
	c.blobSeen += len(gotBlobs)
	// The new data root is the tree of the model, computed from scratch.
	root, err := fhRootOf(c.records)
	if err != nil {
		return fail("model root: %v", err)
	}
	if root != commit.Data {
		return fail("data %s, model root %s", commit.Data, root)
	}
	c.rev, c.data, c.head = ev.Rev, &commit.Data, evCommit
	c.commits = append(c.commits, fhCommit{Seq: ev.Seq, CID: evCommit.String(), Rev: ev.Rev})
	return nil
}

// fhWriter drives the mixed workload over HTTP and remembers what it
// expects: the acked commits in order, and which blobs each record uses.
type fhWriter struct {
	t      *testing.T
	s      *testServer
	did    string
	access string
	rng    *rand.Rand
	paths  []string // existing record paths
	n      int
	blobs  []map[string]any // uploaded blob refs
	acked  []fhCommit
	// blobsOf: record CID → blob CIDs it references.
	blobsOf map[string][]string
}

func (w *fhWriter) rkey() string {
	w.n++
	return testTID(w.n)
}

// record makes a record of collection, referencing a random blob now and
// then.
func (w *fhWriter) record(coll string) (map[string]any, []string) {
	var blob map[string]any
	if len(w.blobs) > 0 && w.rng.IntN(4) == 0 {
		blob = w.blobs[w.rng.IntN(len(w.blobs))]
	}
	var rec map[string]any
	switch coll {
	case "app.bsky.feed.post":
		rec = post(fmt.Sprintf("post %d: %s", w.n, strings.Repeat("x", w.rng.IntN(200))))
		if blob != nil {
			rec["embed"] = map[string]any{"$type": "app.bsky.embed.images", "images": []any{map[string]any{"alt": "pic", "image": blob}}}
		}
	default:
		rec = map[string]any{"$type": coll, "n": w.rng.IntN(1 << 20), "note": strings.Repeat("y", w.rng.IntN(100))}
		if blob != nil {
			rec["attachment"] = blob
		}
	}
	if blob == nil {
		return rec, nil
	}
	return rec, []string{blob["ref"].(map[string]any)["$link"].(string)}
}

var fhCollections = []string{"app.bsky.feed.post", "com.example.fh.item", "com.example.fh.other"}

func (w *fhWriter) ack(what string, st int, out map[string]any) map[string]any {
	w.t.Helper()
	wantStatus(w.t, what, st, out, 200, "")
	cm, _ := out["commit"].(map[string]any)
	if cm == nil {
		w.t.Fatalf("%s: no commit in %v", what, out)
	}
	w.acked = append(w.acked, fhCommit{CID: cm["cid"].(string), Rev: cm["rev"].(string)})
	return out
}

func (w *fhWriter) pick() (int, string) {
	i := w.rng.IntN(len(w.paths))
	return i, w.paths[i]
}

func (w *fhWriter) removePath(i int) {
	w.paths[i] = w.paths[len(w.paths)-1]
	w.paths = w.paths[:len(w.paths)-1]
}

func (w *fhWriter) create() {
	coll := fhCollections[w.rng.IntN(len(fhCollections))]
	rkey := w.rkey()
	rec, bl := w.record(coll)
	body := map[string]any{"repo": w.did, "collection": coll, "record": rec}
	if w.rng.IntN(2) == 0 {
		body["rkey"] = rkey // otherwise the server picks a TID
	}
	st, out := w.s.call(w.t, "POST", "com.atproto.repo.createRecord", w.access, "", body)
	w.ack("createRecord", st, out)
	w.paths = append(w.paths, strings.TrimPrefix(out["uri"].(string), "at://"+w.did+"/"))
	w.blobsOf[out["cid"].(string)] = bl
}

func (w *fhWriter) update() {
	if len(w.paths) == 0 {
		w.create()
		return
	}
	_, path := w.pick()
	coll, rkey, _ := strings.Cut(path, "/")
	rec, bl := w.record(coll)
	st, out := w.s.call(w.t, "POST", "com.atproto.repo.putRecord", w.access, "", map[string]any{"repo": w.did, "collection": coll, "rkey": rkey, "record": rec})
	w.ack("putRecord", st, out)
	w.blobsOf[out["cid"].(string)] = bl
}

func (w *fhWriter) delete() {
	if len(w.paths) == 0 {
		w.create()
		return
	}
	i, path := w.pick()
	coll, rkey, _ := strings.Cut(path, "/")
	st, out := w.s.call(w.t, "POST", "com.atproto.repo.deleteRecord", w.access, "", map[string]any{"repo": w.did, "collection": coll, "rkey": rkey})
	w.ack("deleteRecord", st, out)
	w.removePath(i)
}

// batch applies n writes at once: creates, and updates and deletes of
// distinct existing records.
func (w *fhWriter) batch(n int) {
	var writes []map[string]any
	var newPaths []string
	var blobsByIndex [][]string
	used := map[string]bool{}
	for range n {
		kind := w.rng.IntN(3)
		if kind > 0 && len(w.paths) > len(used)+5 {
			i, path := w.pick()
			for used[path] {
				i, path = w.pick()
			}
			used[path] = true
			coll, rkey, _ := strings.Cut(path, "/")
			if kind == 1 {
				rec, bl := w.record(coll)
				writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#update", "collection": coll, "rkey": rkey, "value": rec})
				blobsByIndex = append(blobsByIndex, bl)
			} else {
				writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#delete", "collection": coll, "rkey": rkey})
				blobsByIndex = append(blobsByIndex, nil)
				w.removePath(i)
			}
			continue
		}
		coll := fhCollections[w.rng.IntN(len(fhCollections))]
		rkey := w.rkey()
		rec, bl := w.record(coll)
		writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": coll, "rkey": rkey, "value": rec})
		blobsByIndex = append(blobsByIndex, bl)
		newPaths = append(newPaths, coll+"/"+rkey)
	}
	st, out := w.s.call(w.t, "POST", "com.atproto.repo.applyWrites", w.access, "", map[string]any{"repo": w.did, "writes": writes})
	w.ack(fmt.Sprintf("applyWrites of %d", n), st, out)
	results := out["results"].([]any)
	for i, r := range results {
		if c, ok := r.(map[string]any)["cid"].(string); ok {
			w.blobsOf[c] = blobsByIndex[i]
		}
	}
	w.paths = append(w.paths, newPaths...)
}

// noopUpdate writes a record identically: a commit with no ops.
func (w *fhWriter) noopUpdate() {
	st, out := w.s.call(w.t, "GET", "com.atproto.repo.getRecord", "", "repo="+w.did+"&collection=app.bsky.actor.profile&rkey=self", nil)
	wantStatus(w.t, "getRecord profile", st, out, 200, "")
	st, out = w.s.call(w.t, "POST", "com.atproto.repo.putRecord", w.access, "", map[string]any{"repo": w.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": out["value"]})
	w.ack("putRecord (identical)", st, out)
}

func (w *fhWriter) uploadBlobs(n int) {
	for range n {
		st, raw, _ := w.s.callRaw(w.t, "POST", "com.atproto.repo.uploadBlob", w.access, "", pngBytes(w.t, 2000+w.rng.IntN(3000)), "image/png")
		var up map[string]any
		_ = json.Unmarshal(raw, &up)
		wantStatus(w.t, "uploadBlob", st, up, 200, "")
		w.blobs = append(w.blobs, up["blob"].(map[string]any))
	}
}

func (w *fhWriter) profile() {
	rec := map[string]any{"$type": "app.bsky.actor.profile", "displayName": fmt.Sprintf("Alice %d", w.n)}
	var bl []string
	if len(w.blobs) > 0 {
		b := w.blobs[w.rng.IntN(len(w.blobs))]
		rec["avatar"] = b
		bl = []string{b["ref"].(map[string]any)["$link"].(string)}
	}
	st, out := w.s.call(w.t, "POST", "com.atproto.repo.putRecord", w.access, "", map[string]any{"repo": w.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": rec})
	w.ack("putRecord profile", st, out)
	w.blobsOf[out["cid"].(string)] = bl
}

func fhHost(s *testServer) string {
	u, _ := url.Parse(s.URL)
	return u.Host
}

// TestFirehoseOracle follows the firehose of our real server through a long
// mixed workload and checks every event with indigo and the strict sync 1.1
// invariants; a consumer that joins mid-way from cursor 0 gets the same
// bytes; the final model equals the exported repository.
func TestFirehoseOracle(t *testing.T) {
	s := startServer(t, nil)
	live := fhSubscribe(t, fhHost(s), "") // before the account: sees everything live
	did, access, _ := s.createAccount(t)
	pub := fhSigningPub(t, s.app)
	w := &fhWriter{t: t, s: s, did: did, access: access, rng: rand.New(rand.NewPCG(4, 4)), blobsOf: map[string][]string{}}
	w.uploadBlobs(3)
	w.profile()
	w.batch(200) // the largest batch, all creates
	var late *fhReader
	const steps = 160
	for i := range steps {
		switch r := w.rng.IntN(100); {
		case i == steps/2:
			late = fhSubscribe(t, fhHost(s), "0") // replays, then joins live
			w.batch(200)                          // a full mixed batch
		case i == steps/3:
			w.noopUpdate()
		case i == 2*steps/3:
			// A handle change: one #identity, then commits go on.
			st, out := s.call(t, "POST", "com.atproto.identity.updateHandle", access, "", map[string]any{"handle": "alice2.test"})
			wantStatus(t, "updateHandle", st, out, 200, "")
		case r < 30:
			w.create()
		case r < 50:
			w.update()
		case r < 65:
			w.delete()
		case r < 95:
			w.batch(1 + w.rng.IntN(40))
		default:
			w.profile()
		}
	}
	head := w.acked[len(w.acked)-1].Rev
	frames := live.waitUntil(t, "the head commit", fhHasRev(head))

	c := newFHChecker(did, "alice.test", pub)
	c.handles = append(c.handles, "alice2.test")
	for k, v := range w.blobsOf {
		c.blobsOf[k] = v
	}
	var types []string
	for _, f := range frames {
		if err := c.check(f); err != nil {
			t.Fatal(err)
		}
		if len(types) < 4 {
			types = append(types, f.T)
		}
	}
	if !slices.Equal(types, []string{"#identity", "#account", "#commit", "#sync"}) {
		t.Fatalf("account creation events %v", types)
	}
	// Every acked write is a #commit, in order, and nothing else is.
	got := c.commits[1:]
	if len(got) != len(w.acked) {
		t.Fatalf("%d commit events after creation, %d acked writes", len(got), len(w.acked))
	}
	for i := range got {
		if got[i].CID != w.acked[i].CID || got[i].Rev != w.acked[i].Rev {
			t.Fatalf("commit event %d is %+v, acked %+v", i, got[i], w.acked[i])
		}
	}
	if len(c.handles) != 0 || c.idents != 2 {
		t.Fatalf("%d #identity events; handles never announced: %v", c.idents, c.handles)
	}
	if c.maxOps != 200 || c.blobSeen == 0 || c.syncs != 1 {
		t.Fatalf("workload too narrow: max ops %d, blobs %d, syncs %d", c.maxOps, c.blobSeen, c.syncs)
	}
	// The late consumer replayed from storage, then followed live: the
	// same frames, byte for byte.
	lateFrames := late.waitUntil(t, "the head commit", fhHasRev(head))
	if len(lateFrames) != len(frames) {
		t.Fatalf("late consumer: %d frames, live %d", len(lateFrames), len(frames))
	}
	for i := range frames {
		if !bytes.Equal(lateFrames[i].Raw, frames[i].Raw) {
			t.Fatalf("frame %d differs between the live and the replaying consumer", i)
		}
	}
	// The model built from the events is the exported repository.
	st, car, _ := s.callRaw(t, "GET", "com.atproto.sync.getRepo", "", "did="+did, nil, "")
	if st != 200 {
		t.Fatalf("getRepo: %d %s", st, car)
	}
	full := fhVerifyRepoCAR(t, car, pub)
	if full.commitCID.String() != w.acked[len(w.acked)-1].CID || !maps.Equal(full.records, c.records) {
		t.Fatalf("exported repository (%d records, head %s) differs from the event model (%d records)", len(full.records), full.commitCID, len(c.records))
	}
	t.Logf("%d events, %d commits, %d records, largest commit %d ops / %d bytes", c.lastSeq, len(c.commits), len(c.records), c.maxOps, c.maxBlocks)
}

// TestFirehoseManySubscribers: 100 websocket consumers each get every
// commit of a series of writes, in order, byte-identical.
func TestFirehoseManySubscribers(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	start := s.app.events.LastSeq()
	const subs, writes = 100, 30
	readers := make([]*fhReader, subs)
	for i := range readers {
		// A cursor at the head: whenever the subscription is set up, it
		// starts with the next event.
		readers[i] = fhSubscribe(t, fhHost(s), fmt.Sprint(start))
	}
	var acked []string
	for i := range writes {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post(fmt.Sprint("post ", i))})
		wantStatus(t, "createRecord", st, out, 200, "")
		acked = append(acked, out["commit"].(map[string]any)["rev"].(string))
	}
	first := readers[0].waitUntil(t, "all commits", fhHasRev(acked[writes-1]))
	for i, r := range readers {
		fs := r.waitUntil(t, "all commits", fhHasRev(acked[writes-1]))
		if len(fs) != writes {
			t.Fatalf("subscriber %d: %d frames, want %d", i, len(fs), writes)
		}
		for j, f := range fs {
			if f.Commit == nil || f.Seq != start+int64(j)+1 || f.Commit.Rev != acked[j] || !bytes.Equal(f.Raw, first[j].Raw) {
				t.Fatalf("subscriber %d frame %d: %s seq %d", i, j, f.T, f.Seq)
			}
		}
	}
}

// fhRepoExport is a verified full repository CAR.
type fhRepoExport struct {
	commitCID cid.Cid
	commit    *irepo.Commit
	blocks    map[cid.Cid][]byte
	records   map[string]cid.Cid
}

// fhTreeBlocks collects the blocks indigo writes for a tree.
type fhTreeBlocks struct {
	blockstore.Blockstore
	got map[cid.Cid]bool
}

func (b *fhTreeBlocks) Put(_ context.Context, blk blocks.Block) error {
	b.got[blk.Cid()] = true
	return nil
}

// fhVerifyRepoCAR checks a full export with indigo: it loads, the commit is
// signed by pub, the root recomputed from scratch equals the commit's data,
// and the CAR holds exactly the commit, the tree's nodes and its records.
func fhVerifyRepoCAR(t *testing.T, car []byte, pub atcrypto.PublicKey) fhRepoExport {
	t.Helper()
	roots, bs, err := fhCARBlocks(car)
	if err != nil {
		t.Fatal(err)
	}
	commit, r, err := irepo.LoadRepoFromCAR(context.Background(), bytes.NewReader(car))
	if err != nil {
		t.Fatalf("LoadRepoFromCAR: %v", err)
	}
	if len(roots) != 1 {
		t.Fatalf("roots %v", roots)
	}
	if err := commit.VerifySignature(pub); err != nil {
		t.Fatalf("signature: %v", err)
	}
	recs, err := fhTreeMap(&r.MST)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := imst.LoadTreeFromMap(recs)
	if err != nil {
		t.Fatal(err)
	}
	tb := &fhTreeBlocks{got: map[cid.Cid]bool{}}
	root, err := fresh.WriteDiffBlocks(context.Background(), tb)
	if err != nil {
		t.Fatal(err)
	}
	if *root != commit.Data {
		t.Fatalf("root recomputed from scratch %s, commit data %s", root, commit.Data)
	}
	want := map[cid.Cid]bool{roots[0]: true}
	for c := range tb.got {
		want[c] = true
	}
	for _, c := range recs {
		want[c] = true
	}
	if len(want) != len(bs) {
		t.Fatalf("CAR holds %d blocks, the repository %d", len(bs), len(want))
	}
	for c := range want {
		if bs[c] == nil {
			t.Fatalf("block %s missing from the CAR", c)
		}
	}
	return fhRepoExport{commitCID: roots[0], commit: commit, blocks: bs, records: recs}
}

// fhGetCAR fetches a CAR from a sync method, failing on anything but 200.
func fhGetCAR(t *testing.T, s *testServer, nsid, query string) []byte {
	t.Helper()
	st, body, hdr := s.callRaw(t, "GET", nsid, "", query, nil, "")
	if st != 200 || hdr.Get("Content-Type") != "application/vnd.ipld.car" {
		t.Fatalf("%s?%s: %d %s %q", nsid, query, st, hdr.Get("Content-Type"), body)
	}
	return body
}

// TestSyncMethodsVerify checks com.atproto.sync exports with indigo:
// getRepo in full (signature, root recomputed from scratch, exact block
// set), getRepo?since diffs that applied in order rebuild the head,
// getRecord proofs of present and absent keys, and getBlocks.
func TestSyncMethodsVerify(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	pub := fhSigningPub(t, s.app)
	w := &fhWriter{t: t, s: s, did: did, access: access, rng: rand.New(rand.NewPCG(9, 9)), blobsOf: map[string][]string{}}
	w.batch(150)
	q := "did=" + did

	base := fhVerifyRepoCAR(t, fhGetCAR(t, s, "com.atproto.sync.getRepo", q), pub)
	union := maps.Clone(base.blocks)
	rev, firstRev := base.commit.Rev, base.commit.Rev
	var last fhRepoExport
	for round := range 4 {
		for range 3 {
			w.create()
			w.update()
			w.delete()
		}
		w.batch(20 + round*30)
		head := w.acked[len(w.acked)-1]
		diff := fhGetCAR(t, s, "com.atproto.sync.getRepo", q+"&since="+rev)
		roots, bs, err := fhCARBlocks(diff)
		if err != nil {
			t.Fatal(err)
		}
		commit, ccid, err := irepo.LoadCommitFromCAR(context.Background(), bytes.NewReader(diff))
		if err != nil {
			t.Fatal(err)
		}
		if len(roots) != 1 || roots[0].String() != head.CID || ccid.String() != head.CID || commit.Rev != head.Rev {
			t.Fatalf("round %d: diff rooted at %v (%s), head %+v", round, roots, commit.Rev, head)
		}
		if err := commit.VerifySignature(pub); err != nil {
			t.Fatal(err)
		}
		if len(bs) >= len(union) {
			t.Fatalf("round %d: the diff since %s has %d blocks: not a diff", round, rev, len(bs))
		}
		maps.Copy(union, bs)
		// The union of everything fetched so far holds the whole head tree.
		tree, err := imst.LoadTreeFromStore(context.Background(), fhBlockSource(union), commit.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fhTreeMap(tree)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		last = fhVerifyRepoCAR(t, fhGetCAR(t, s, "com.atproto.sync.getRepo", q), pub)
		if last.commitCID.String() != head.CID || !maps.Equal(got, last.records) {
			t.Fatalf("round %d: rebuilt %d records, the full export %d", round, len(got), len(last.records))
		}
		for _, c := range got {
			if union[c] == nil {
				t.Fatalf("round %d: record block %s missing from the diffs", round, c)
			}
		}
		rev = head.Rev
	}
	// One diff from the first export covers all rounds at once.
	_, bs, err := fhCARBlocks(fhGetCAR(t, s, "com.atproto.sync.getRepo", q+"&since="+firstRev))
	if err != nil {
		t.Fatal(err)
	}
	all := maps.Clone(base.blocks)
	maps.Copy(all, bs)
	tree, err := imst.LoadTreeFromStore(context.Background(), fhBlockSource(all), last.commit.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fhTreeMap(tree); err != nil || !maps.Equal(got, last.records) {
		t.Fatalf("one diff since the first export: %v", err)
	}

	// getRecord: proofs of presence and absence.
	paths := slices.Sorted(maps.Keys(last.records))
	type probe struct {
		path    string
		present bool
	}
	probes := []probe{
		{paths[0], true}, {paths[len(paths)/2], true}, {paths[len(paths)-1], true},
		{"app.bsky.actor.profile/absent", false},
		{"com.example.fh.item/k0000000", false},  // before every item
		{"com.example.fh.item/kzzzzzzz", false},  // after every item
		{"zzz.example.none/x", false},            // after everything
		{"aaa.example.none/x", false},            // before everything
		{"com.example.fh.item/k0000150a", false}, // between keys
	}
	for _, p := range paths {
		if strings.HasPrefix(p, "com.example.fh.other/") {
			probes = append(probes, probe{p, true}, probe{p + "b", false})
			break
		}
	}
	for _, p := range probes {
		coll, rkey, _ := strings.Cut(p.path, "/")
		car := fhGetCAR(t, s, "com.atproto.sync.getRecord", q+"&collection="+coll+"&rkey="+rkey)
		roots, bs, err := fhCARBlocks(car)
		if err != nil {
			t.Fatal(err)
		}
		commit, ccid, err := irepo.LoadCommitFromCAR(context.Background(), bytes.NewReader(car))
		if err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		if len(roots) != 1 || *ccid != last.commitCID || commit.VerifySignature(pub) != nil {
			t.Fatalf("%s: proof rooted at %v, head %s", p.path, roots, last.commitCID)
		}
		tree, err := imst.LoadTreeFromStore(context.Background(), fhBlockSource(bs), commit.Data)
		if err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		val, err := tree.Get([]byte(p.path))
		if err != nil {
			t.Fatalf("%s: the proof does not cover the key: %v", p.path, err)
		}
		switch {
		case p.present && (val == nil || *val != last.records[p.path] || bs[*val] == nil):
			t.Fatalf("%s: proof gives %v, want %s with its block", p.path, val, last.records[p.path])
		case !p.present && val != nil:
			t.Fatalf("%s: absent, but the proof gives %s", p.path, val)
		}
		if len(bs) > 40 {
			t.Fatalf("%s: a proof of %d blocks", p.path, len(bs))
		}
	}

	// getBlocks: exactly the blocks asked for.
	want := []cid.Cid{last.commitCID, last.commit.Data, last.records[paths[0]], last.records[paths[len(paths)-1]]}
	var qs strings.Builder
	qs.WriteString(q)
	for _, c := range want {
		qs.WriteString("&cids=" + c.String())
	}
	_, bs, err = fhCARBlocks(fhGetCAR(t, s, "com.atproto.sync.getBlocks", qs.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != len(want) {
		t.Fatalf("getBlocks: %d blocks, asked %d", len(bs), len(want))
	}
	for _, c := range want {
		if !bytes.Equal(bs[c], last.blocks[c]) {
			t.Fatalf("getBlocks: block %s missing or different", c)
		}
	}
	missing := fhCIDOf(t, "not a block of this repository")
	st, out := s.call(t, "GET", "com.atproto.sync.getBlocks", "", q+"&cids="+last.commitCID.String()+"&cids="+missing.String(), nil)
	wantStatus(t, "getBlocks (missing)", st, out, 400, "BlockNotFound")
	if !strings.Contains(fmt.Sprint(out["message"]), missing.String()) {
		t.Fatalf("getBlocks (missing): %v", out)
	}
}

func fhCIDOf(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.DagCBOR, MhType: 0x12}.Sum([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSubscribeReposCursorErrors: a malformed cursor is refused before the
// upgrade; a future one gets the FutureCursor error frame, then a close with
// 1008 and the error name.
func TestSubscribeReposCursorErrors(t *testing.T) {
	s := startServer(t, nil)
	s.createAccount(t) // seqs 1-4
	for _, tc := range []struct {
		cursor string
		status int
	}{
		{"abc", 400},
		{"-1", 400},
		{"1.5", 400},
	} {
		st, out := s.call(t, "GET", "com.atproto.sync.subscribeRepos", "", "cursor="+tc.cursor, nil)
		wantStatus(t, "subscribeRepos cursor="+tc.cursor, st, out, tc.status, "InvalidRequest")
	}
	for _, cursor := range []string{"5", "999999999999"} {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		conn, resp, err := d.Dial("ws://"+fhHost(s)+"/xrpc/com.atproto.sync.subscribeRepos?cursor="+cursor, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		f, err := fhParse(msg)
		if err != nil || f.Op != -1 || f.T != "" {
			t.Fatalf("cursor %s: frame %+v, %v", cursor, f, err)
		}
		if !bytes.Equal(f.Body, []byte("\xa2eerrorlFutureCursorgmessageuCursor in the future.")) {
			t.Fatalf("cursor %s: error body %q", cursor, f.Body)
		}
		_, _, err = conn.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "FutureCursor" {
			t.Fatalf("cursor %s: after the error frame: %v", cursor, err)
		}
		conn.Close()
	}
}
