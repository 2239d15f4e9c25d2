package mst

import (
	"bytes"
	"errors"
	"fmt"

	imst "github.com/bluesky-social/indigo/atproto/repo/mst"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// MaxKeyBytes bounds the length of a key (a repo path). The repository spec
// implies a bound on paths; indigo uses the same value.
const MaxKeyBytes = 1024

// MaxHeight bounds the height of any tree we accept. A height is the count of
// leading zero bit-pairs of a SHA-256 hash: heights above a few dozen cannot
// occur for honest keys, and a bound keeps recursion over hostile data finite.
const MaxHeight = 64

var (
	// ErrInvalidKey is returned for an empty key or one over MaxKeyBytes.
	ErrInvalidKey = errors.New("mst: invalid key")
	// ErrBlockNotFound is returned by a BlockSource for a CID it does not hold.
	ErrBlockNotFound = errors.New("mst: block not found")
	// ErrMalformedNode is returned when a stored node does not decode, or does not
	// obey the structural rules of the spec (ordering, heights, no empty nodes).
	ErrMalformedNode = errors.New("mst: malformed node")
)

// BlockSource reads block bytes by CID. It returns an error wrapping
// ErrBlockNotFound for a missing block. The returned slice is only read, never
// retained past the life of the Tree.
type BlockSource interface {
	GetBlock(c cid.Cid) ([]byte, error)
}

// Block is an encoded node (or any other block) with its CID.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// cidBuilder makes the CIDs of the repository: CIDv1, dag-cbor, sha2-256.
var cidBuilder = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

// node is one decoded tree node. Entries alternate between values and child
// pointers, sorted by key, never two children in a row.
type node struct {
	entries []entry
	height  int
	// dirty means cid is out of date, or the node must be included in the diff
	// as proof even though its content did not change.
	dirty bool
	// cid is the last computed or loaded CID, nil for a node never encoded.
	cid *cid.Cid
}

// entry is a key/value pair (key != nil) or a pointer to a lower node.
type entry struct {
	key      []byte
	val      cid.Cid
	childCID *cid.Cid
	child    *node // loaded lazily from childCID
	dirty    bool
}

func (e *entry) isValue() bool { return e.key != nil }
func (e *entry) isChild() bool { return e.key == nil && (e.child != nil || e.childCID != nil) }

func (n *node) isEmpty() bool { return len(n.entries) == 0 }

// HeightForKey is the layer of a key: leading zero bit-pairs of its SHA-256.
func HeightForKey(key []byte) int { return imst.HeightForKey(key) }

// validKey reports whether key may be stored in a tree.
func validKey(key []byte) bool { return len(key) > 0 && len(key) <= MaxKeyBytes }

// decodeNode parses a node block, checking that it is the canonical form of a
// node at height h (h < 0: a root, whose height is derived from its keys).
func decodeNode(data []byte, c cid.Cid, h int, isRoot bool) (*node, error) {
	nd, err := imst.NodeDataFromCBOR(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedNode, c, err)
	}
	n := &node{cid: &c, height: h, entries: make([]entry, 0, 2*len(nd.Entries)+1)}
	if nd.Left != nil {
		l := *nd.Left
		n.entries = append(n.entries, entry{childCID: &l})
	}
	var prev []byte
	for i := range nd.Entries {
		e := &nd.Entries[i]
		if e.PrefixLen < 0 || int(e.PrefixLen) > len(prev) {
			return nil, fmt.Errorf("%w: %s: bad prefix length", ErrMalformedNode, c)
		}
		if i > 0 && e.PrefixLen == 0 && len(e.KeySuffix) == 0 {
			return nil, fmt.Errorf("%w: %s: empty key", ErrMalformedNode, c)
		}
		key := make([]byte, 0, int(e.PrefixLen)+len(e.KeySuffix))
		key = append(key, prev[:e.PrefixLen]...)
		key = append(key, e.KeySuffix...)
		if !validKey(key) {
			return nil, fmt.Errorf("%w: %s: invalid key", ErrMalformedNode, c)
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return nil, fmt.Errorf("%w: %s: keys out of order", ErrMalformedNode, c)
		}
		kh := HeightForKey(key)
		if n.height < 0 {
			n.height = kh
		}
		if kh != n.height {
			return nil, fmt.Errorf("%w: %s: key at height %d in node at height %d", ErrMalformedNode, c, kh, n.height)
		}
		// Canonical encoding: the prefix is the longest shared one.
		if prev != nil && int(e.PrefixLen) != imst.CountPrefixLen(prev, key) {
			return nil, fmt.Errorf("%w: %s: non-canonical prefix", ErrMalformedNode, c)
		}
		n.entries = append(n.entries, entry{key: key, val: e.Value})
		if e.Right != nil {
			r := *e.Right
			n.entries = append(n.entries, entry{childCID: &r})
		}
		prev = key
	}
	if len(nd.Entries) == 0 {
		// An inner node may hold only a pointer to a lower layer; a root never
		// does (it would be trimmed), and only a root may be empty.
		if isRoot {
			if nd.Left != nil {
				return nil, fmt.Errorf("%w: %s: root without keys", ErrMalformedNode, c)
			}
			n.height = 0
		} else if nd.Left == nil {
			return nil, fmt.Errorf("%w: %s: empty inner node", ErrMalformedNode, c)
		}
	}
	if n.height > MaxHeight {
		return nil, fmt.Errorf("%w: %s: height %d", ErrMalformedNode, c, n.height)
	}
	if n.height == 0 {
		for i := range n.entries {
			if n.entries[i].isChild() {
				return nil, fmt.Errorf("%w: %s: child pointer at height 0", ErrMalformedNode, c)
			}
		}
	}
	return n, nil
}

// encode turns the node into its canonical block. Every child must have a CID.
func (n *node) encode() ([]byte, cid.Cid, error) {
	d := imst.NodeData{Entries: make([]imst.EntryData, 0, len(n.entries))}
	var prevKey []byte
	for i := range n.entries {
		e := &n.entries[i]
		if e.isChild() {
			if e.childCID == nil {
				return nil, cid.Undef, fmt.Errorf("mst: encoding node with unencoded child")
			}
			if i == 0 {
				d.Left = e.childCID
				continue
			}
			if len(d.Entries) == 0 {
				return nil, cid.Undef, fmt.Errorf("mst: two child pointers in a row")
			}
			d.Entries[len(d.Entries)-1].Right = e.childCID
			continue
		}
		p := imst.CountPrefixLen(prevKey, e.key)
		d.Entries = append(d.Entries, imst.EntryData{
			PrefixLen: int64(p),
			KeySuffix: e.key[p:],
			Value:     e.val,
		})
		prevKey = e.key
	}
	var buf bytes.Buffer
	if err := d.MarshalCBOR(&buf); err != nil {
		return nil, cid.Undef, fmt.Errorf("mst: encoding node: %w", err)
	}
	c, err := cidBuilder.Sum(buf.Bytes())
	if err != nil {
		return nil, cid.Undef, err
	}
	return buf.Bytes(), c, nil
}
