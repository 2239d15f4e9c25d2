package repo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/mst"
)

// importSpill holds the blocks of a CAR being imported in an unlinked
// temporary file, so that checking a repository of any size costs memory
// only for an index (44 bytes a block), not for the blocks. The file then
// receives the log of the checked record paths, which the write phase reads
// back in key order.
//
// Only blocks with the repository's CID format (CIDv1, dag-cbor, sha2-256)
// are indexed, by their digest: no other block can be part of a valid
// repository, so the others are skipped as they are read. Once the blocks
// are read (startLog), the index is sorted by digest, which is CID order,
// the order the write phase wants, and refs counts the references to each
// block that the check finds.
//
// An importSpill is used by one goroutine.
type importSpill struct {
	f   *os.File
	w   *bufio.Writer
	off int64 // bytes written so far
	// index is every block's digest and place in the file; sorted and
	// without duplicates after startLog.
	index []spillEntry
	// refs[i] counts the references to index[i] (after startLog).
	refs []uint32
	// logStart is where the path log begins (after the blocks).
	logStart int64
}

type spillEntry struct {
	d   [32]byte
	loc spillLoc
}

// errSpill marks a failure of the spill file itself (the disk), not of the
// CAR.
var errSpill = errors.New("import spill")

// spillLoc packs a block's offset (40 bits) and length (24 bits).
type spillLoc uint64

const spillMaxLen = 1<<24 - 1

func (l spillLoc) off() int64 { return int64(l >> 24) }
func (l spillLoc) len() int   { return int(l & spillMaxLen) }

// newImportSpill creates the spill file in dir, unlinked at once: the open
// descriptor keeps the data, and a crash leaves nothing behind.
func newImportSpill(dir string) (*importSpill, error) {
	f, err := os.CreateTemp(dir, ".import-*.spill")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSpill, err)
	}
	_ = os.Remove(f.Name())
	return &importSpill{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (s *importSpill) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// digest returns the SHA-256 digest of a repository-format CID.
func digest(c cid.Cid) ([32]byte, bool) {
	var d [32]byte
	if !isRepoCID(c) {
		return d, false
	}
	h := c.Hash()
	copy(d[:], h[len(h)-32:])
	return d, true
}

// cidOfDigest is the repository-format CID of a digest.
func cidOfDigest(d [32]byte) cid.Cid {
	mh, _ := multihash.Encode(d[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.DagCBOR, mh)
}

// put appends a block (already hash-checked) to the file.
func (s *importSpill) put(c cid.Cid, data []byte) error {
	d, ok := digest(c)
	if !ok {
		return nil // never part of a valid repository
	}
	if len(data) > spillMaxLen || s.off >= 1<<40 {
		return fmt.Errorf("%w: block of %d bytes at %d", errSpill, len(data), s.off)
	}
	if _, err := s.w.Write(data); err != nil {
		return fmt.Errorf("%w: %w", errSpill, err)
	}
	s.index = append(s.index, spillEntry{d: d, loc: spillLoc(uint64(s.off)<<24 | uint64(len(data)))})
	s.off += int64(len(data))
	return nil
}

// flush makes everything written readable.
func (s *importSpill) flush() error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errSpill, err)
	}
	return nil
}

// find returns the position of a block in the index (after startLog).
func (s *importSpill) find(d [32]byte) (int, bool) {
	return slices.BinarySearchFunc(s.index, d, func(e spillEntry, d [32]byte) int { return bytes.Compare(e.d[:], d[:]) })
}

// get reads a block by digest into a new slice (after startLog).
func (s *importSpill) get(d [32]byte) ([]byte, bool, error) {
	i, ok := s.find(d)
	if !ok {
		return nil, false, nil
	}
	b, err := s.read(i)
	return b, true, err
}

// read reads block i of the index into a new slice.
func (s *importSpill) read(i int) ([]byte, error) {
	loc := s.index[i].loc
	b := make([]byte, loc.len())
	if _, err := s.f.ReadAt(b, loc.off()); err != nil {
		return nil, fmt.Errorf("%w: %w", errSpill, err)
	}
	return b, nil
}

// GetBlock is the mst.BlockSource over the CAR's blocks.
func (s *importSpill) GetBlock(c cid.Cid) ([]byte, error) {
	d, ok := digest(c)
	if !ok {
		return nil, fmt.Errorf("%s: %w", c, mst.ErrBlockNotFound)
	}
	b, ok, err := s.get(d)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w", c, mst.ErrBlockNotFound)
	}
	return b, nil
}

// startLog ends the blocks: it sorts the index and makes the blocks
// readable; what is written next is the path log.
func (s *importSpill) startLog() error {
	if err := s.flush(); err != nil {
		return err
	}
	s.logStart = s.off
	slices.SortFunc(s.index, func(a, b spillEntry) int { return bytes.Compare(a.d[:], b.d[:]) })
	// A block repeated in the CAR has the same bytes (its hash was
	// checked): keep one.
	s.index = slices.CompactFunc(s.index, func(a, b spillEntry) bool { return a.d == b.d })
	s.refs = make([]uint32, len(s.index))
	return nil
}

// logPath appends a record path and its record's digest to the path log.
func (s *importSpill) logPath(key []byte, d [32]byte) error {
	var n [binary.MaxVarintLen64]byte
	l := binary.PutUvarint(n[:], uint64(len(key)))
	for _, b := range [][]byte{n[:l], key, d[:]} {
		if _, err := s.w.Write(b); err != nil {
			return fmt.Errorf("%w: %w", errSpill, err)
		}
		s.off += int64(len(b))
	}
	return nil
}

// pathLog reads the path log back, in the order written.
type pathLog struct {
	r   *bufio.Reader
	key []byte
	d   [32]byte
}

// paths returns a reader of the path log; call flush first.
func (s *importSpill) paths() *pathLog {
	return &pathLog{r: bufio.NewReaderSize(io.NewSectionReader(s.f, s.logStart, s.off-s.logStart), 256<<10)}
}

// next reads the next path; ok is false at the end. The key is valid until
// the next call.
func (p *pathLog) next() (key []byte, d [32]byte, ok bool, err error) {
	n, err := binary.ReadUvarint(p.r)
	if errors.Is(err, io.EOF) {
		return nil, d, false, nil
	}
	if err != nil || n > mst.MaxKeyBytes {
		return nil, d, false, fmt.Errorf("%w: path log: %v", errSpill, err)
	}
	if uint64(cap(p.key)) < n {
		p.key = make([]byte, n)
	}
	p.key = p.key[:n]
	if _, err := io.ReadFull(p.r, p.key); err != nil {
		return nil, d, false, fmt.Errorf("%w: path log: %w", errSpill, err)
	}
	if _, err := io.ReadFull(p.r, p.d[:]); err != nil {
		return nil, d, false, fmt.Errorf("%w: path log: %w", errSpill, err)
	}
	return p.key, p.d, true, nil
}
