package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/mst"
)

// Default bounds of ImportCAR. The CAR's blocks are spilled to a temporary
// file in the database's directory while they are checked, so
// DefaultImportMaxBytes bounds that file; memory grows only with the number
// of blocks (an index of 44 bytes a block, see importSpill). 512 MiB is
// several times the largest repositories on the network today.
const (
	DefaultImportMaxBytes      int64 = 512 << 20
	DefaultImportMaxBlocks           = 4_000_000
	DefaultImportMaxBlockBytes       = 2 << 20
)

// maxImportRevSkew is how far in the future of our clock an imported rev
// may be.
const maxImportRevSkew = 10 * time.Minute

// ImportOptions bound an import. Zero values take the defaults.
type ImportOptions struct {
	// MaxBytes bounds the CAR, in bytes read from the reader.
	MaxBytes int64
	// MaxBlocks bounds the number of blocks in the CAR.
	MaxBlocks int
	// MaxBlockBytes bounds the data of any one block (records are further
	// bounded by MaxRecordBytes).
	MaxBlockBytes int
}

func (o ImportOptions) withDefaults() ImportOptions {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultImportMaxBytes
	}
	if o.MaxBlocks <= 0 {
		o.MaxBlocks = DefaultImportMaxBlocks
	}
	if o.MaxBlockBytes <= 0 {
		o.MaxBlockBytes = DefaultImportMaxBlockBytes
	}
	return o
}

// ImportCAR replaces the whole repository with the one in a CAR v1
// (com.atproto.repo.importRepo), after checking all of it: exactly one root,
// which is a version-3 commit of this repository's DID, signed by pub (the
// DID's current signing key, which may not be ours yet), with a TID rev not
// in the future; every block hashes to its CID; the MST under the commit is
// complete, well formed, has valid repo paths as keys and recomputes to the
// commit's data root; every record is present and is valid atproto data with
// a $type. Blocks the commit does not reach are dropped.
//
// The imported commit is not stored: the imported tree becomes the head
// under a new commit signed with this repository's key, whose rev is after
// both the imported rev and the current one. Relays then see one rev
// everywhere (head, getLatestCommit, #sync) and a signature that verifies
// once the DID document names our key.
//
// Any fault of the CAR returns an error wrapping ErrInvalidCAR, and leaves the
// repository untouched. Otherwise the checked repository is written in
// several bounded transactions to a staging area that no reader sees (see
// writeImport), and the new commit becomes the head in one last small
// transaction that also runs Options.BeforeCommit. An import that fails or
// is interrupted there (an error, a cancel, a crash) leaves the repository
// as it was; Open discards what a crash left behind.
//
// The returned Commit (also what BeforeCommit gets) describes the new head as
// a #sync event needs it: Ops, Since and PrevData are nil, and CAR, like
// SyncCAR(), holds only the signed commit block, rooted at it. Blobs lists
// every blob the imported records reference and RecordBlobs which record
// references which. ImportedRev is the rev of the commit in the CAR.
func (r *Repo) ImportCAR(ctx context.Context, rd io.Reader, pub atcrypto.PublicKey, opts ImportOptions) (*Commit, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sp, err := newImportSpill(filepath.Dir(r.db.Path()))
	if err != nil {
		return nil, err
	}
	defer sp.close()
	imp, err := r.readImport(ctx, rd, pub, opts.withDefaults(), sp)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.writeImport(ctx, imp, sp)
}

// imported is a checked repository, ready to be written. Its blocks are in
// the spill file, whose refs count the references to each: one for each MST
// node, one per path for records, none for the rest (the imported commit,
// blocks nothing links).
type imported struct {
	rev  string
	data cid.Cid
	// paths is the number of record paths (in the spill's path log).
	paths int
	blobs []cid.Cid
	// recBlobs are the blobs of each record path that references any.
	recBlobs map[string][]cid.Cid
}

// boundedReader fails once more than max bytes have been read.
type boundedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

var errTooLarge = errors.New("CAR is too large")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.exceeded {
		return 0, errTooLarge
	}
	// Read at most one byte past the bound, to tell a CAR of exactly max
	// bytes from a larger one.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		b.exceeded = true
		return 0, errTooLarge
	}
	return n, err
}

// isRepoCID reports whether c has the one CID format of repository blocks:
// CIDv1, dag-cbor, sha2-256.
func isRepoCID(c cid.Cid) bool {
	p := c.Prefix()
	return p.Version == 1 && p.Codec == cid.DagCBOR && p.MhType == multihash.SHA2_256 && p.MhLength == 32
}

func invalidCAR(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidCAR, fmt.Sprintf(format, args...))
}

// readImport reads the CAR into the spill file and checks it, without
// touching the database.
func (r *Repo) readImport(ctx context.Context, rd io.Reader, pub atcrypto.PublicKey, o ImportOptions, sp *importSpill) (imp *imported, err error) {
	// The CAR and CBOR decoders are not written against hostile input; a
	// panic in them is a bad CAR, not a crash.
	defer func() {
		if p := recover(); p != nil {
			imp, err = nil, invalidCAR("cannot decode: %v", p)
		}
	}()
	if pub == nil {
		return nil, fmt.Errorf("importing repository: no public key")
	}

	// 1. Read every block, hash-checked, within the bounds, into the spill.
	br := &boundedReader{r: rd, left: o.MaxBytes}
	fail := func(what string, err error) error {
		if br.exceeded || errors.Is(err, errTooLarge) {
			return invalidCAR("over %d bytes", o.MaxBytes)
		}
		// Keep the reader's own error too (a body limit, a disconnect).
		return fmt.Errorf("%w: %s: %w", ErrInvalidCAR, what, err)
	}
	cr, err := carv2.NewBlockReader(br,
		carv2.MaxAllowedHeaderSize(64<<10),
		carv2.MaxAllowedSectionSize(uint64(o.MaxBlockBytes)+atdata.MAX_CID_BYTES),
		carv2.WithTrustedCAR(false), // check that each block hashes to its CID
	)
	if err != nil {
		return nil, fail("header", err)
	}
	if cr.Version != 1 {
		return nil, invalidCAR("CAR version %d, want 1", cr.Version)
	}
	if len(cr.Roots) != 1 {
		return nil, invalidCAR("%d roots, want 1", len(cr.Roots))
	}
	root := cr.Roots[0]
	if !isRepoCID(root) {
		return nil, invalidCAR("root %s is not a dag-cbor sha2-256 CIDv1", root)
	}
	for n := 0; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		blk, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fail("block", err)
		}
		if n >= o.MaxBlocks {
			return nil, invalidCAR("over %d blocks", o.MaxBlocks)
		}
		data := blk.RawData()
		if len(data) > o.MaxBlockBytes {
			return nil, invalidCAR("block %s is %d bytes, over %d", blk.Cid(), len(data), o.MaxBlockBytes)
		}
		if err := sp.put(blk.Cid(), data); err != nil {
			return nil, err
		}
	}
	if br.exceeded {
		return nil, invalidCAR("over %d bytes", o.MaxBytes)
	}
	if err := sp.startLog(); err != nil {
		return nil, err
	}

	// 2. The commit.
	rootD, _ := digest(root)
	commitData, ok, err := sp.get(rootD)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, invalidCAR("root commit %s is not in the CAR", root)
	}
	var sc irepo.Commit
	if err := sc.UnmarshalCBOR(bytes.NewReader(commitData)); err != nil {
		return nil, invalidCAR("root is not a commit: %v", err)
	}
	if err := sc.VerifyStructure(); err != nil {
		return nil, invalidCAR("commit: %v", err)
	}
	if sc.DID != r.did.String() {
		return nil, invalidCAR("commit is of %s, not %s", sc.DID, r.did)
	}
	tid, err := syntax.ParseTID(sc.Rev)
	if err != nil || len(sc.Rev) != revLen {
		return nil, invalidCAR("commit rev %q is not a TID", sc.Rev)
	}
	// Our next revs must sort after this one, and relays refuse revs from
	// the future.
	if tid.Time().After(r.now().Add(maxImportRevSkew)) {
		return nil, invalidCAR("commit rev %s is in the future (%s)", sc.Rev, tid.Time().UTC().Format(time.RFC3339))
	}
	if !sc.Data.Defined() || !isRepoCID(sc.Data) {
		return nil, invalidCAR("commit data %s is not a dag-cbor sha2-256 CIDv1", sc.Data)
	}
	if err := sc.VerifySignature(pub); err != nil {
		return nil, invalidCAR("commit signature: %v", err)
	}

	// 3. The MST, walked in key order with only the path from the root in
	// memory: every node present and well formed (decodeNode checks
	// encoding, order within a node and heights), keys valid repo paths in
	// strictly increasing order, records present and valid. The keys feed a
	// Builder, which recomputes the tree the spec makes of them, node by
	// node: its root equals the commit's data only if the CAR's tree has
	// exactly that shape. The paths go to the spill's log, for the write.
	tree, err := mst.LoadTree(sp, sc.Data)
	if err != nil {
		return nil, invalidCAR("MST root: %v", err)
	}
	imp = &imported{rev: sc.Rev, data: sc.Data, recBlobs: map[string][]cid.Cid{}}
	// The nodes the Builder makes are the CAR's if its root is the
	// commit's data; a node the CAR lacks means it is not.
	missingNode := false
	build := mst.NewBuilder(func(b mst.Block) error {
		d, _ := digest(b.CID)
		if i, ok := sp.find(d); ok {
			sp.refs[i] = 1
		} else {
			missingNode = true
		}
		return nil
	})
	// The blobs of each distinct record that has any, for records held at
	// several paths.
	blobsOf := map[[32]byte][]cid.Cid{}
	var prev []byte
	err = tree.Walk(nil, false, func(key []byte, val cid.Cid) error {
		if imp.paths++; imp.paths%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return invalidCAR("MST keys out of order: %q after %q", key, prev)
		}
		prev = key
		if _, _, err := syntax.ParseRepoPath(string(key)); err != nil {
			return invalidCAR("MST key %q: %v", key, err)
		}
		d, ok := digest(val)
		if !ok {
			return invalidCAR("record %s: CID %s is not a dag-cbor sha2-256 CIDv1", key, val)
		}
		i, ok := sp.find(d)
		if !ok {
			return invalidCAR("record %s: block %s is not in the CAR", key, val)
		}
		if sp.refs[i] == 0 {
			// The first path to this record: check it.
			blobs, err := checkImportedRecord(sp, i, key)
			if err != nil {
				return err
			}
			if len(blobs) > 0 {
				blobsOf[d] = blobs
				imp.blobs = append(imp.blobs, blobs...)
			}
		}
		sp.refs[i]++
		if bl := blobsOf[d]; len(bl) > 0 {
			imp.recBlobs[string(key)] = bl
		}
		if err := build.Add(key, val); err != nil {
			return invalidCAR("MST: %v", err)
		}
		return sp.logPath(key, d)
	})
	if err != nil {
		if errors.Is(err, ErrInvalidCAR) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		if errors.Is(err, errSpill) {
			return nil, err // our disk, not the CAR
		}
		return nil, invalidCAR("MST: %v", err)
	}
	if err := sp.flush(); err != nil {
		return nil, err
	}

	// 4. The MST recomputes, from its keys and values alone, to the commit's
	// data root: its shape is the one the spec makes of these keys.
	data, err := build.Finish()
	if err != nil {
		return nil, invalidCAR("rebuilding MST: %v", err)
	}
	if data != sc.Data {
		return nil, invalidCAR("MST recomputes to %s, not the commit's data %s", data, sc.Data)
	}
	if missingNode {
		// Impossible with the root equal: the walk read every node.
		return nil, fmt.Errorf("%w: an MST node of %s is missing after the walk", ErrCorrupt, data)
	}
	// Same root, so the same nodes, byte for byte: these are the CAR's.
	imp.blobs = uniqueCIDs(imp.blobs)
	return imp, nil
}

// checkImportedRecord checks the record of key, block i of the spill, and
// returns the blobs it references.
func checkImportedRecord(sp *importSpill, i int, key []byte) ([]cid.Cid, error) {
	data, err := sp.read(i)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxRecordBytes {
		return nil, invalidCAR("record %s is %d bytes, over %d", key, len(data), MaxRecordBytes)
	}
	rec, err := atdata.UnmarshalCBOR(data)
	if err != nil {
		return nil, invalidCAR("record %s: %v", key, err)
	}
	// Records carry their type; this also keeps record blocks apart from
	// MST nodes and commits, which have none, for the refcounts.
	if typ, ok := rec["$type"].(string); !ok || typ == "" {
		return nil, invalidCAR("record %s has no $type", key)
	}
	var out []cid.Cid
	for _, b := range atdata.ExtractBlobs(rec) {
		out = append(out, b.Ref.CID())
	}
	return out, nil
}
