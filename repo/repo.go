// Package repo is one account's atproto repository in a bbolt file: records,
// the MST over them, and the signed commits, changed only by Apply, one bbolt
// transaction per commit.
package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
)

// MaxWrites is the most writes one Apply accepts, as the reference PDS and the
// firehose (at most 200 ops per #commit) require.
const MaxWrites = 200

// MaxCommitBytes bounds the CAR of one commit, as the firehose does (a relay
// drops larger #commit events): larger batches are refused.
const MaxCommitBytes = 2_000_000

// Action is the kind of a write or of a firehose op.
type Action string

// The actions of writes and ops.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
	// ActionPut asks for the record at the path to be created or updated,
	// whichever applies when the write transaction reads the tree, so the
	// choice cannot race a concurrent delete or create. It is a Write action
	// only: its Op and Result say create or update.
	ActionPut Action = "put"
)

// Write is one change asked of Apply.
type Write struct {
	Action     Action
	Collection syntax.NSID
	RKey       syntax.RecordKey
	// Record is the new value for create and update, as atdata parses it
	// (atdata.UnmarshalJSON or ParseRecordJSON). Its $type must equal
	// Collection.
	Record map[string]any
	// SwapRecord, if set, must be the current record CID (update, delete,
	// put).
	SwapRecord *cid.Cid
}

// Path is the repository path "collection/rkey".
func (w *Write) Path() string { return w.Collection.String() + "/" + w.RKey.String() }

// Op is one applied change, as a #commit lists it.
type Op struct {
	Action     Action
	Collection syntax.NSID
	RKey       syntax.RecordKey
	// CID is the new record CID (nil for a delete).
	CID *cid.Cid
	// Prev is the previous record CID (nil for a create).
	Prev *cid.Cid
	// Blobs are the blob CIDs the new record references (create, update).
	Blobs []cid.Cid
}

// Path is the repository path "collection/rkey".
func (o *Op) Path() string { return o.Collection.String() + "/" + o.RKey.String() }

// Result is what one input write of Apply did.
type Result struct {
	// Action is what was done: create, update or delete (a put resolved).
	Action     Action
	Collection syntax.NSID
	RKey       syntax.RecordKey
	// CID is the record CID at the path after the write (the unchanged one
	// for a no-op update; nil for a delete).
	CID *cid.Cid
	// Prev is the record CID before the write (nil for a create).
	Prev *cid.Cid
	// Changed is false for an update to the identical record, which has no
	// Op in the commit.
	Changed bool
}

// Path is the repository path "collection/rkey".
func (r *Result) Path() string { return r.Collection.String() + "/" + r.RKey.String() }

// Commit describes a new commit: what the API answers and what the firehose
// #commit carries. It owns all its slices.
type Commit struct {
	DID syntax.DID
	// CID is the CID of the signed commit block.
	CID cid.Cid
	Rev string
	// Since is the rev of the previous commit (nil for the first).
	Since *string
	// Data is the MST root; PrevData the previous one (nil for the first).
	Data     cid.Cid
	PrevData *cid.Cid
	Ops      []Op
	// Results has one entry per input write of Apply, in order (nil for
	// Init and imports).
	Results []Result
	// CAR is a CAR v1 with the commit CID as its only root: the commit
	// block, the new and proof MST nodes, and the new record blocks.
	CAR []byte
	// Blobs are the blob CIDs referenced by created or updated records.
	Blobs []cid.Cid
	// CommitBlock is the signed commit block itself.
	CommitBlock []byte
	// Sync marks a commit that replaced the whole repository (an import):
	// Ops is nil and consumers are told with a #sync event.
	Sync bool
	// RecordBlobs, for an import, maps each record path that references
	// blobs to those blobs (duplicates possible), so that blob references
	// can be rebuilt in the same transaction.
	RecordBlobs map[string][]cid.Cid
	// ImportedRev, for an import, is the rev of the commit in the CAR.
	ImportedRev string
}

// SyncCAR returns a CAR v1 rooted at the commit that holds only the commit
// block: the blocks of a #sync event.
func (c *Commit) SyncCAR() []byte {
	car := newCARBuffer(c.CID)
	car.add(c.CID, c.CommitBlock)
	return car.bytes()
}

// Options configure a Repo.
type Options struct {
	// BeforeCommit, if set, runs inside the write transaction after the
	// commit, its blocks, the records index and the head are written, and
	// before the transaction commits. The sequencer appends its #commit event
	// here. An error aborts the whole write.
	BeforeCommit func(tx *bolt.Tx, c *Commit) error
}

// Repo is one account's repository. Its methods are safe for concurrent use;
// writes are serialized.
type Repo struct {
	db     *bolt.DB
	did    syntax.DID
	signer atcrypto.PrivateKey
	opts   Options

	mu      sync.Mutex // held by writers
	commits uint64     // commits made since Open, under mu
	clockID uint
	now     func() time.Time
	exports exportSpools // getRepo snapshots on disk, shared (spool.go)
}

// Open opens the repository of did stored in db, creating its buckets. The
// file may hold no repository yet (see Init); it may not hold another DID's.
// signer is the account's repo signing key (K-256).
func Open(db *bolt.DB, did syntax.DID, signer atcrypto.PrivateKey, opts Options) (*Repo, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		// An import that did not finish (a crash) left its staging area:
		// the repository is the one from before it.
		if err := dropImport(tx); err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		stored := m.Get(metaDID)
		if stored == nil {
			return m.Put(metaDID, []byte(did))
		}
		if string(stored) != did.String() {
			return fmt.Errorf("%w: %s, not %s", ErrWrongRepo, stored, did)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening repository: %w", err)
	}
	var b [1]byte
	_, _ = rand.Read(b[:])
	return &Repo{db: db, did: did, signer: signer, opts: opts, clockID: uint(b[0] % 32), now: time.Now}, nil
}

// DID is the account the repository belongs to.
func (r *Repo) DID() syntax.DID { return r.did }

// Head returns the current commit CID and rev, or ErrNoHead.
func (r *Repo) Head() (commit cid.Cid, rev string, err error) {
	err = r.db.View(func(tx *bolt.Tx) error {
		h, err := readHead(tx)
		if err != nil {
			return err
		}
		if h == nil {
			return ErrNoHead
		}
		commit, rev = h.commit, h.rev
		return nil
	})
	return commit, rev, err
}

// Init writes the first commit, of an empty repository, if there is none
// yet. It returns that commit, or nil if the repository already had one.
func (r *Repo) Init(ctx context.Context) (*Commit, error) {
	return r.apply(ctx, nil, nil, true)
}

// Apply applies the writes as one signed commit, in one bbolt transaction:
// either all of it (records, MST nodes, commit, index, head, the
// BeforeCommit hook) is durable when Apply returns, or none of it is.
//
// swapCommit, if set, must be the current head commit. Creates require the
// path to be free, updates and deletes require a record there, puts take
// either; SwapRecord further pins its CID. All these checks are made inside
// the write transaction. An update to the identical record is applied but
// omitted from Ops; Commit.Results reports it with Changed false. Errors wrap
// the Err values of this package.
func (r *Repo) Apply(ctx context.Context, writes []Write, swapCommit *cid.Cid) (*Commit, error) {
	if len(writes) == 0 {
		return nil, fmt.Errorf("%w: no writes", ErrInvalidWrite)
	}
	return r.apply(ctx, writes, swapCommit, false)
}

// prepared is a validated write with its encoded record.
type prepared struct {
	w   *Write
	rec encodedRecord
	// noop: an update to the record already there, which changes nothing.
	noop bool
}

func prepare(writes []Write) ([]prepared, error) {
	if len(writes) > MaxWrites {
		return nil, fmt.Errorf("%w: %d writes, at most %d", ErrInvalidWrite, len(writes), MaxWrites)
	}
	out := make([]prepared, len(writes))
	seen := make(map[string]struct{}, len(writes))
	for i := range writes {
		w := &writes[i]
		if _, err := syntax.ParseNSID(w.Collection.String()); err != nil {
			return nil, fmt.Errorf("%w: collection: %v", ErrInvalidWrite, err)
		}
		if _, err := syntax.ParseRecordKey(w.RKey.String()); err != nil {
			return nil, fmt.Errorf("%w: record key: %v", ErrInvalidWrite, err)
		}
		p := w.Path()
		if _, dup := seen[p]; dup {
			return nil, fmt.Errorf("%w: %s written twice in one batch", ErrInvalidWrite, p)
		}
		seen[p] = struct{}{}
		out[i].w = w
		switch w.Action {
		case ActionCreate, ActionUpdate, ActionPut:
			if typ, ok := w.Record["$type"].(string); !ok || typ != w.Collection.String() {
				return nil, fmt.Errorf("%w: $type must be %q", ErrInvalidRecord, w.Collection)
			}
			rec, err := encodeRecord(w.Record)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			out[i].rec = rec
		case ActionDelete:
		default:
			return nil, fmt.Errorf("%w: unknown action %q", ErrInvalidWrite, w.Action)
		}
	}
	return out, nil
}

func (r *Repo) apply(ctx context.Context, writes []Write, swapCommit *cid.Cid, init bool) (*Commit, error) {
	// Encoding and validation are CPU work that needs no lock.
	preps, err := prepare(writes)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.write(func(tx *bolt.Tx) (*Commit, error) {
		h, err := readHead(tx)
		if err != nil {
			return nil, err
		}
		if init && h != nil {
			return nil, nil
		}
		if swapCommit != nil && (h == nil || h.commit != *swapCommit) {
			return nil, fmt.Errorf("%w: commit %s is not the head", ErrInvalidSwap, swapCommit)
		}
		return r.build(tx, h, preps)
	})
}

// write runs one repository write under the writer lock in one bbolt
// transaction: do builds the commit (nil: nothing to write), then the
// BeforeCommit hook runs in the same transaction.
func (r *Repo) write(do func(tx *bolt.Tx) (*Commit, error)) (*Commit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out *Commit
	err := r.db.Update(func(tx *bolt.Tx) error {
		c, err := do(tx)
		if err != nil || c == nil {
			return err
		}
		if err := r.beforeCommit(tx, c); err != nil {
			return err
		}
		out = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// beforeCommit runs the BeforeCommit hook, if any, inside tx.
func (r *Repo) beforeCommit(tx *bolt.Tx, c *Commit) error {
	if r.opts.BeforeCommit == nil {
		return nil
	}
	if err := r.opts.BeforeCommit(tx, c); err != nil {
		return fmt.Errorf("before commit: %w", err)
	}
	return nil
}

// build does the work of one commit inside tx.
func (r *Repo) build(tx *bolt.Tx, h *head, preps []prepared) (*Commit, error) {
	src := txSource{tx.Bucket(bucketBlocks)}
	var tree *mst.Tree
	if h == nil {
		tree = mst.NewTree(src)
	} else {
		var err error
		if tree, err = mst.LoadTree(src, h.data); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	out := &Commit{DID: r.did}
	if len(preps) > 0 {
		out.Results = make([]Result, len(preps))
	}
	var released []cid.Cid
	for i := range preps {
		p := &preps[i]
		w := p.w
		key := []byte(w.Path())
		var prev *cid.Cid
		var err error
		if w.Action == ActionDelete {
			prev, err = tree.Remove(key)
		} else {
			prev, err = tree.Insert(key, p.rec.cid)
		}
		if err != nil {
			return nil, treeErr(err)
		}
		action := w.Action
		if action == ActionPut {
			// Decided here, under the writer lock, on the tree this
			// commit builds on.
			action = ActionUpdate
			if prev == nil {
				action = ActionCreate
			}
		}
		if action == ActionCreate {
			if w.SwapRecord != nil {
				return nil, fmt.Errorf("%w: %s does not exist", ErrInvalidSwap, w.Path())
			}
			if prev != nil {
				return nil, fmt.Errorf("%w: %s", ErrRecordExists, w.Path())
			}
		} else {
			if prev == nil {
				return nil, fmt.Errorf("%w: %s", ErrRecordNotFound, w.Path())
			}
			if w.SwapRecord != nil && *w.SwapRecord != *prev {
				return nil, fmt.Errorf("%w: %s is %s, not %s", ErrInvalidSwap, w.Path(), prev, w.SwapRecord)
			}
		}
		res := Result{Action: action, Collection: w.Collection, RKey: w.RKey, Prev: prev, Changed: true}
		if action != ActionDelete {
			c := p.rec.cid
			res.CID = &c
		}
		p.noop = action == ActionUpdate && *prev == p.rec.cid
		if p.noop {
			res.Changed = false
			out.Results[i] = res
			continue
		}
		if prev != nil {
			released = append(released, *prev)
		}
		out.Results[i] = res
		op := Op{Action: action, Collection: w.Collection, RKey: w.RKey, Prev: prev}
		if action != ActionDelete {
			c := p.rec.cid
			op.CID = &c
			op.Blobs = p.rec.blobs
		}
		out.Ops = append(out.Ops, op)
	}
	diff, err := tree.Commit()
	if err != nil {
		return nil, treeErr(err)
	}

	// The commit.
	rev := r.nextRev(h)
	sc := irepo.Commit{DID: r.did.String(), Version: irepo.ATPROTO_REPO_VERSION, Data: diff.Root, Rev: rev}
	if err := sc.Sign(r.signer); err != nil {
		return nil, fmt.Errorf("signing commit: %w", err)
	}
	var cb bytes.Buffer
	if err := sc.MarshalCBOR(&cb); err != nil {
		return nil, fmt.Errorf("encoding commit: %w", err)
	}
	commitCID, err := cidBuilder.Sum(cb.Bytes())
	if err != nil {
		return nil, err
	}
	out.CID, out.Rev, out.Data, out.CommitBlock = commitCID, rev, diff.Root, cb.Bytes()
	if h != nil {
		since, prevData := h.rev, h.data
		out.Since, out.PrevData = &since, &prevData
	}

	// Blocks: new references first, then releases, so that a record moved
	// between paths in one batch is never dropped.
	bw, err := newBlockWriter(tx, rev)
	if err != nil {
		return nil, err
	}
	car := newCARBuffer(commitCID)
	car.add(commitCID, cb.Bytes())
	if err := bw.put(commitCID, cb.Bytes(), false); err != nil {
		return nil, err
	}
	for _, b := range diff.Blocks {
		if err := bw.put(b.CID, b.Data, false); err != nil {
			return nil, err
		}
		car.add(b.CID, b.Data)
	}
	if _, ok := car.seen[diff.Root]; !ok {
		// An unchanged tree (only no-op updates) yields no node blocks, but
		// a consumer must still be able to load the MST root from the CAR.
		data, err := src.GetBlock(diff.Root)
		if err != nil {
			return nil, fmt.Errorf("%w: MST root: %v", ErrCorrupt, err)
		}
		car.add(diff.Root, data)
	}
	records := tx.Bucket(bucketRecords)
	for i := range preps {
		p := &preps[i]
		if p.noop {
			continue
		}
		key := []byte(p.w.Path())
		if p.w.Action == ActionDelete {
			if err := records.Delete(key); err != nil {
				return nil, err
			}
			continue
		}
		if err := records.Put(key, p.rec.cid.Bytes()); err != nil {
			return nil, err
		}
		if !car.add(p.rec.cid, p.rec.data) {
			continue // the same record twice in a batch: one reference per path
		}
		out.Blobs = append(out.Blobs, p.rec.blobs...)
	}
	for i := range preps {
		// Each path holds one reference to its record block.
		p := &preps[i]
		if p.w.Action != ActionDelete && !p.noop {
			if err := bw.put(p.rec.cid, p.rec.data, true); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range released {
		if err := bw.release(c); err != nil {
			return nil, err
		}
	}
	for _, c := range diff.Removed {
		if err := bw.release(c); err != nil {
			return nil, err
		}
	}
	if h != nil {
		if err := bw.release(h.commit); err != nil {
			return nil, err
		}
	}
	if err := writeHead(tx, &head{commit: commitCID, rev: rev, data: diff.Root}); err != nil {
		return nil, err
	}
	r.commits++
	if err := noteRecent(tx, rev, out.Ops, r.commits%recentPruneEvery == 0); err != nil {
		return nil, err
	}
	out.Blobs = uniqueCIDs(out.Blobs)
	out.CAR = car.bytes()
	if len(out.CAR) > MaxCommitBytes {
		return nil, fmt.Errorf("%w: the commit would carry %d bytes of blocks, over %d", ErrInvalidWrite, len(out.CAR), MaxCommitBytes)
	}
	return out, nil
}

// nextRev returns a TID after both the clock and the stored rev, so revs
// increase across restarts, clock steps back and imported repositories.
func (r *Repo) nextRev(h *head) string {
	now := r.now().UnixMicro()
	if h != nil {
		if t, err := syntax.ParseTID(h.rev); err == nil {
			if last := int64(t.Integer() >> 10); now <= last {
				now = last + 1
			}
		}
	}
	return syntax.NewTID(now, r.clockID).String()
}

func treeErr(err error) error {
	if errors.Is(err, mst.ErrInvalidKey) {
		return fmt.Errorf("%w: %v", ErrInvalidWrite, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

func uniqueCIDs(cs []cid.Cid) []cid.Cid {
	slices.SortFunc(cs, func(a, b cid.Cid) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return slices.CompactFunc(cs, func(a, b cid.Cid) bool { return a == b })
}
