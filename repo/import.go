package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/atdata"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/mst"
	bolt "go.etcd.io/bbolt"
)

// Default bounds of ImportCAR. The whole CAR is held in memory while it is
// checked, so DefaultImportMaxBytes also bounds the memory an import takes
// (about twice that, with the map and the rebuilt tree). 512 MiB is several
// times the largest repositories on the network today.
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
// repository untouched. Otherwise the new commit becomes the head, in one
// bbolt transaction that also runs Options.BeforeCommit.
//
// The returned Commit (also what BeforeCommit gets) describes the new head as
// a #sync event needs it: Ops, Since and PrevData are nil, and CAR, like
// SyncCAR(), holds only the signed commit block, rooted at it. Blobs lists
// every blob the imported records reference and RecordBlobs which record
// references which. ImportedRev is the rev of the commit in the CAR.
func (r *Repo) ImportCAR(ctx context.Context, rd io.Reader, pub atcrypto.PublicKey, opts ImportOptions) (*Commit, error) {
	imp, err := r.readImport(ctx, rd, pub, opts.withDefaults())
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r.write(func(tx *bolt.Tx) (*Commit, error) { return r.writeImport(tx, imp) })
}

// imported is a checked repository, ready to be written.
type imported struct {
	commitCID  cid.Cid
	commitData []byte
	rev        string
	data       cid.Cid
	// nodes are the MST nodes, as the rebuilt tree encodes them.
	nodes []mst.Block
	// paths are the record paths in key order, with their record CIDs.
	paths []importedPath
	// records are the distinct record blocks.
	records map[cid.Cid][]byte
	blobs   []cid.Cid
	// recBlobs are the blobs of each distinct record block that has any.
	recBlobs map[cid.Cid][]cid.Cid
}

type importedPath struct {
	key string
	val cid.Cid
}

// mapSource is a BlockSource over the blocks of a CAR.
type mapSource map[cid.Cid][]byte

func (m mapSource) GetBlock(c cid.Cid) ([]byte, error) {
	if b, ok := m[c]; ok {
		return b, nil
	}
	return nil, mst.ErrBlockNotFound // the tree names the CID
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

// readImport reads and checks the CAR, without touching the database.
func (r *Repo) readImport(ctx context.Context, rd io.Reader, pub atcrypto.PublicKey, o ImportOptions) (imp *imported, err error) {
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

	// 1. Read every block, hash-checked, within the bounds.
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
	blocks := mapSource{}
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
		blocks[blk.Cid()] = data
	}
	if br.exceeded {
		return nil, invalidCAR("over %d bytes", o.MaxBytes)
	}

	// 2. The commit.
	commitData, ok := blocks[root]
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

	// 3. The MST: every node present and well formed (decodeNode checks
	// encoding, order within a node and heights), keys valid repo paths in
	// strictly increasing order, records present and valid.
	tree, err := mst.LoadTree(blocks, sc.Data)
	if err != nil {
		return nil, invalidCAR("MST root: %v", err)
	}
	imp = &imported{commitCID: root, commitData: commitData, rev: sc.Rev, data: sc.Data, records: map[cid.Cid][]byte{}, recBlobs: map[cid.Cid][]cid.Cid{}}
	var prev []byte
	n := 0
	err = tree.Walk(nil, false, func(key []byte, val cid.Cid) error {
		if n++; n%4096 == 0 {
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
		if _, seen := imp.records[val]; !seen {
			if err := checkImportedRecord(blocks, key, val, imp); err != nil {
				return err
			}
		}
		imp.paths = append(imp.paths, importedPath{key: string(key), val: val})
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalidCAR) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, invalidCAR("MST: %v", err)
	}

	// The CAR's own node blocks are no longer needed (the rebuilt tree
	// yields them again); let them go before the rebuild, the peak.
	clear(blocks)
	blocks = nil

	// 4. The MST recomputes, from its keys and values alone, to the commit's
	// data root: its shape is the one the spec makes of these keys.
	fresh := mst.NewTree(mapSource{})
	for _, p := range imp.paths {
		if _, err := fresh.Insert([]byte(p.key), p.val); err != nil {
			return nil, invalidCAR("rebuilding MST: %v", err)
		}
	}
	diff, err := fresh.Commit()
	if err != nil {
		return nil, invalidCAR("rebuilding MST: %v", err)
	}
	if diff.Root != sc.Data {
		return nil, invalidCAR("MST recomputes to %s, not the commit's data %s", diff.Root, sc.Data)
	}
	// Same root, so the same nodes, byte for byte: these are the CAR's.
	imp.nodes = diff.Blocks
	imp.blobs = uniqueCIDs(imp.blobs)
	return imp, nil
}

// checkImportedRecord checks the record block val of key and adds it to imp.
func checkImportedRecord(blocks mapSource, key []byte, val cid.Cid, imp *imported) error {
	if !isRepoCID(val) {
		return invalidCAR("record %s: CID %s is not a dag-cbor sha2-256 CIDv1", key, val)
	}
	data, ok := blocks[val]
	if !ok {
		return invalidCAR("record %s: block %s is not in the CAR", key, val)
	}
	if len(data) > MaxRecordBytes {
		return invalidCAR("record %s is %d bytes, over %d", key, len(data), MaxRecordBytes)
	}
	rec, err := atdata.UnmarshalCBOR(data)
	if err != nil {
		return invalidCAR("record %s: %v", key, err)
	}
	// Records carry their type; this also keeps record blocks apart from
	// MST nodes and commits, which have none, for the refcounts.
	if typ, ok := rec["$type"].(string); !ok || typ == "" {
		return invalidCAR("record %s has no $type", key)
	}
	for _, b := range atdata.ExtractBlobs(rec) {
		imp.blobs = append(imp.blobs, b.Ref.CID())
		imp.recBlobs[val] = append(imp.recBlobs[val], b.Ref.CID())
	}
	imp.records[val] = data
	return nil
}

// writeImport replaces the repository with imp inside tx, under a new
// commit signed with our key.
func (r *Repo) writeImport(tx *bolt.Tx, imp *imported) (*Commit, error) {
	h, err := readHead(tx)
	if err != nil {
		return nil, err
	}
	// The new rev sorts after the imported one and after ours.
	after := &head{rev: imp.rev}
	if h != nil && h.rev > after.rev {
		after.rev = h.rev
	}
	rev := r.nextRev(after)
	sc := irepo.Commit{DID: r.did.String(), Version: irepo.ATPROTO_REPO_VERSION, Data: imp.data, Rev: rev}
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
	commitData := cb.Bytes()

	for _, b := range [][]byte{bucketBlocks, bucketRecords, bucketRecent} {
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return nil, fmt.Errorf("clearing %s: %w", b, err)
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return nil, fmt.Errorf("creating %s: %w", b, err)
		}
	}
	// Every reachable block with its number of references: one for the
	// commit and each node, one per path for records. Written in CID order,
	// which bbolt appends fastest.
	type ref struct {
		data []byte
		n    int
	}
	refs := make(map[cid.Cid]*ref, len(imp.nodes)+len(imp.records)+1)
	add := func(c cid.Cid, data []byte) {
		if x, ok := refs[c]; ok {
			x.n++
			return
		}
		refs[c] = &ref{data: data, n: 1}
	}
	add(commitCID, commitData)
	for _, b := range imp.nodes {
		add(b.CID, b.Data)
	}
	for _, p := range imp.paths {
		add(p.val, imp.records[p.val])
	}
	keys := make([]cid.Cid, 0, len(refs))
	for c := range refs {
		keys = append(keys, c)
	}
	// KeyString is the binary CID without a copy: same order as Bytes.
	slices.SortFunc(keys, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
	bw, err := newBlockWriter(tx, rev)
	if err != nil {
		return nil, err
	}
	for _, c := range keys {
		x := refs[c]
		if err := bw.put(c, x.data, false); err != nil {
			return nil, err
		}
		if x.n > 1 {
			// Set the count at once: a record may be under many paths.
			v := bytes.Clone(bw.blocks.Get(c.Bytes()))
			binary.BigEndian.PutUint32(v[revLen:], uint32(x.n))
			if err := bw.blocks.Put(c.Bytes(), v); err != nil {
				return nil, err
			}
		}
	}
	records := tx.Bucket(bucketRecords)
	recBlobs := map[string][]cid.Cid{}
	for _, p := range imp.paths {
		if err := records.Put([]byte(p.key), p.val.Bytes()); err != nil {
			return nil, err
		}
		if bl := imp.recBlobs[p.val]; len(bl) > 0 {
			recBlobs[p.key] = bl
		}
	}
	if err := writeHead(tx, &head{commit: commitCID, rev: rev, data: imp.data}); err != nil {
		return nil, err
	}
	c := &Commit{
		DID:         r.did,
		CID:         commitCID,
		Rev:         rev,
		Data:        imp.data,
		Blobs:       imp.blobs,
		CommitBlock: bytes.Clone(commitData),
		Sync:        true,
		RecordBlobs: recBlobs,
		ImportedRev: imp.rev,
	}
	c.CAR = c.SyncCAR()
	return c, nil
}
