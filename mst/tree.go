package mst

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
)

// Tree is a Merkle Search Tree whose nodes are loaded from a BlockSource as
// operations need them. The zero value is not usable; use NewTree or LoadTree.
//
// Errors from Insert or Remove may leave the Tree half-modified: discard it.
type Tree struct {
	src  BlockSource
	root *node
	// loaded holds the CIDs of the stored nodes read since the last Commit:
	// the only stored nodes an operation can unlink.
	loaded map[cid.Cid]struct{}
}

// NewTree returns an empty tree reading nodes from src.
func NewTree(src BlockSource) *Tree {
	return &Tree{src: src, root: &node{dirty: true}, loaded: map[cid.Cid]struct{}{}}
}

// LoadTree returns the tree whose root node is root. Only the root node is read
// now; the rest is read on demand.
func LoadTree(src BlockSource, root cid.Cid) (*Tree, error) {
	t := &Tree{src: src, loaded: map[cid.Cid]struct{}{}}
	n, err := t.load(root, -1, true)
	if err != nil {
		return nil, err
	}
	t.root = n
	return t, nil
}

func (t *Tree) load(c cid.Cid, height int, isRoot bool) (*node, error) {
	data, err := t.src.GetBlock(c)
	if err != nil {
		return nil, fmt.Errorf("mst: reading node %s: %w", c, err)
	}
	n, err := decodeNode(data, c, height, isRoot)
	if err != nil {
		return nil, err
	}
	t.loaded[c] = struct{}{}
	return n, nil
}

// child returns the child node of entry i of n, reading it if needed.
func (t *Tree) child(n *node, i int) (*node, error) {
	e := &n.entries[i]
	if e.child != nil {
		return e.child, nil
	}
	if e.childCID == nil {
		return nil, fmt.Errorf("mst: entry %d is not a child", i)
	}
	if n.height <= 0 {
		return nil, fmt.Errorf("%w: child below height 0", ErrMalformedNode)
	}
	c, err := t.load(*e.childCID, n.height-1, false)
	if err != nil {
		return nil, err
	}
	e.child = c
	return c, nil
}

// IsEmpty reports whether the tree holds no keys.
func (t *Tree) IsEmpty() bool { return t.root.isEmpty() }

// Get returns the value stored at key, or nil if the key is absent.
func (t *Tree) Get(key []byte) (*cid.Cid, error) {
	if !validKey(key) {
		return nil, ErrInvalidKey
	}
	height := HeightForKey(key)
	n := t.root
	for {
		if height > n.height {
			return nil, nil
		}
		if height == n.height {
			if i := n.findEntry(key); i >= 0 {
				v := n.entries[i].val
				return &v, nil
			}
			return nil, nil
		}
		i := n.findChild(key)
		if i < 0 {
			return nil, nil
		}
		next, err := t.child(n, i)
		if err != nil {
			return nil, err
		}
		n = next
	}
}

// Insert sets key to val and returns the previous value, if any. Inserting
// the value a key already holds is a no-op that returns that value.
func (t *Tree) Insert(key []byte, val cid.Cid) (*cid.Cid, error) {
	if !validKey(key) {
		return nil, ErrInvalidKey
	}
	out, prev, err := t.insert(t.root, key, val, HeightForKey(key))
	if err != nil {
		return nil, err
	}
	t.root = out
	return prev, nil
}

// Remove deletes key and returns its previous value, or nil if it was absent.
func (t *Tree) Remove(key []byte) (*cid.Cid, error) {
	if !validKey(key) {
		return nil, ErrInvalidKey
	}
	out, prev, err := t.remove(t.root, key, HeightForKey(key))
	if err != nil {
		return nil, err
	}
	// Trim the top: a root that is a lone pointer is replaced by its child.
	for len(out.entries) == 1 && out.entries[0].isChild() {
		c, err := t.child(out, 0)
		if err != nil {
			return nil, err
		}
		out = c
	}
	if out.isEmpty() {
		// An emptied tree is the canonical empty node at height 0, whatever
		// height its last key had.
		out.height = 0
	}
	t.root = out
	return prev, nil
}

// findEntry returns the index of the value entry with exactly key, or -1.
func (n *node) findEntry(key []byte) int {
	for i := range n.entries {
		e := &n.entries[i]
		if !e.isValue() {
			continue
		}
		switch bytes.Compare(key, e.key) {
		case 0:
			return i
		case -1:
			return -1
		}
	}
	return -1
}

// findChild returns the index of the child entry whose range would hold key,
// or -1 when no child pointer sits in key's gap between values.
func (n *node) findChild(key []byte) int {
	idx := -1
	for i := range n.entries {
		e := &n.entries[i]
		if e.isChild() {
			idx = i
			continue
		}
		if bytes.Compare(key, e.key) <= 0 {
			break
		}
		idx = -1
	}
	return idx
}

// findInsertionIndex says where key would go among n's entries, and whether
// it falls inside the child at that index (so that child must be split).
func (t *Tree) findInsertionIndex(n *node, key []byte) (int, bool, error) {
	for i := range n.entries {
		e := &n.entries[i]
		if e.isValue() {
			if bytes.Compare(key, e.key) < 0 {
				return i, false, nil
			}
			continue
		}
		if i+1 < len(n.entries) {
			if next := &n.entries[i+1]; next.isValue() && bytes.Compare(key, next.key) > 0 {
				continue
			}
		}
		c, err := t.child(n, i)
		if err != nil {
			return -1, false, err
		}
		order, err := t.compareKey(c, key, false)
		if err != nil {
			return -1, false, err
		}
		if order < 0 {
			return i, false, nil
		}
		if order > 0 {
			continue
		}
		return i, true, nil
	}
	return len(n.entries), false, nil
}

// compareKey places key against the whole key range of the subtree n: -1
// before it, 1 after it, 0 inside it. With markDirty, it marks the nodes that
// prove that order, so that they travel in the diff (sync 1.1 inversion).
func (t *Tree) compareKey(n *node, key []byte, markDirty bool) (int, error) {
	if n.isEmpty() {
		return 0, fmt.Errorf("%w: key range of an empty node", ErrMalformedNode)
	}
	if markDirty {
		n.dirty = true
	}
	if e := &n.entries[0]; e.isValue() && bytes.Compare(key, e.key) < 0 {
		return -1, nil
	}
	if e := &n.entries[len(n.entries)-1]; e.isValue() && bytes.Compare(key, e.key) > 0 {
		return 1, nil
	}
	for i := range n.entries {
		e := &n.entries[i]
		if e.isValue() {
			if bytes.Compare(key, e.key) < 0 {
				return 0, nil
			}
			continue
		}
		if i+1 < len(n.entries) {
			if next := &n.entries[i+1]; next.isValue() && bytes.Compare(key, next.key) > 0 {
				continue
			}
		}
		c, err := t.child(n, i)
		if err != nil {
			return 0, err
		}
		order, err := t.compareKey(c, key, markDirty)
		if err != nil {
			return 0, err
		}
		if i == 0 && order < 0 {
			return -1, nil
		}
		if i == len(n.entries)-1 && order > 0 {
			return 1, nil
		}
		return 0, nil
	}
	return 0, nil
}

// proveMutation marks the unchanged nodes next to key that a consumer needs
// to invert an insert or a removal of key at n.
func (t *Tree) proveMutation(n *node, key []byte) error {
	for i := range n.entries {
		e := &n.entries[i]
		if e.isValue() {
			if bytes.Compare(key, e.key) < 0 {
				return nil
			}
			continue
		}
		if i+1 < len(n.entries) {
			if next := &n.entries[i+1]; next.isValue() && bytes.Compare(key, next.key) > 0 {
				continue
			}
		}
		c, err := t.child(n, i)
		if err != nil {
			return err
		}
		order, err := t.compareKey(c, key, true)
		if err != nil {
			return err
		}
		if order > 0 {
			continue
		}
		if order < 0 {
			return nil
		}
		return t.proveMutation(c, key)
	}
	return nil
}

func (t *Tree) insert(n *node, key []byte, val cid.Cid, height int) (*node, *cid.Cid, error) {
	if height > n.height {
		return t.insertParent(n, key, val, height)
	}
	if height < n.height {
		return t.insertChild(n, key, val, height)
	}
	if i := n.findEntry(key); i >= 0 {
		e := &n.entries[i]
		prev := e.val
		if prev == val {
			return n, &prev, nil
		}
		e.val = val
		e.dirty = true
		n.dirty = true
		return n, &prev, nil
	}
	idx, split, err := t.findInsertionIndex(n, key)
	if err != nil {
		return nil, nil, err
	}
	n.dirty = true
	newEntry := entry{key: key, val: val, dirty: true}
	if err := t.proveMutation(n, key); err != nil {
		return nil, nil, err
	}
	if !split {
		n.entries = slices.Insert(n.entries, idx, newEntry)
		return n, nil, nil
	}
	c, err := t.child(n, idx)
	if err != nil {
		return nil, nil, err
	}
	left, right, err := t.split(c, key)
	if err != nil {
		return nil, nil, err
	}
	n.entries = slices.Delete(n.entries, idx, idx+1)
	n.entries = slices.Insert(n.entries, idx,
		entry{child: left, dirty: true},
		newEntry,
		entry{child: right, dirty: true},
	)
	return n, nil, nil
}

func splitEntries(n *node, idx int) (*node, *node, error) {
	if idx == 0 || idx >= len(n.entries) {
		return nil, nil, fmt.Errorf("%w: split at an end of a node", ErrMalformedNode)
	}
	left := &node{height: n.height, dirty: true, entries: slices.Clone(n.entries[:idx])}
	right := &node{height: n.height, dirty: true, entries: slices.Clone(n.entries[idx:])}
	return left, right, nil
}

// split divides subtree n around key, which it does not contain.
func (t *Tree) split(n *node, key []byte) (*node, *node, error) {
	if n.isEmpty() {
		return nil, nil, fmt.Errorf("%w: split of an empty node", ErrMalformedNode)
	}
	idx, split, err := t.findInsertionIndex(n, key)
	if err != nil {
		return nil, nil, err
	}
	if !split {
		return splitEntries(n, idx)
	}
	c, err := t.child(n, idx)
	if err != nil {
		return nil, nil, err
	}
	lowerLeft, lowerRight, err := t.split(c, key)
	if err != nil {
		return nil, nil, err
	}
	left := &node{height: n.height, dirty: true, entries: make([]entry, 0, idx+1)}
	left.entries = append(left.entries, n.entries[:idx]...)
	left.entries = append(left.entries, entry{child: lowerLeft, dirty: true})
	right := &node{height: n.height, dirty: true, entries: make([]entry, 0, len(n.entries)-idx)}
	right.entries = append(right.entries, entry{child: lowerRight, dirty: true})
	right.entries = append(right.entries, n.entries[idx+1:]...)
	return left, right, nil
}

// insertParent adds a layer above n for a key higher than n.
func (t *Tree) insertParent(n *node, key []byte, val cid.Cid, height int) (*node, *cid.Cid, error) {
	var parent *node
	if n.isEmpty() {
		parent = &node{height: height, dirty: true}
	} else {
		parent = &node{height: n.height + 1, dirty: true, entries: []entry{{child: n, dirty: true}}}
	}
	return t.insert(parent, key, val, height)
}

// insertChild descends for a key lower than n, creating a child if needed.
func (t *Tree) insertChild(n *node, key []byte, val cid.Cid, height int) (*node, *cid.Cid, error) {
	if idx := n.findChild(key); idx >= 0 {
		c, err := t.child(n, idx)
		if err != nil {
			return nil, nil, err
		}
		newChild, prev, err := t.insert(c, key, val, height)
		if err != nil {
			return nil, nil, err
		}
		if prev != nil && *prev == val {
			return n, prev, nil
		}
		n.dirty = true
		n.entries[idx].child = newChild
		n.entries[idx].dirty = true
		return n, prev, nil
	}
	idx, split, err := t.findInsertionIndex(n, key)
	if err != nil {
		return nil, nil, err
	}
	if split {
		return nil, nil, fmt.Errorf("%w: unexpected split inserting a child", ErrMalformedNode)
	}
	n.dirty = true
	newChild, _, err := t.insert(&node{height: n.height - 1, dirty: true}, key, val, height)
	if err != nil {
		return nil, nil, err
	}
	n.entries = slices.Insert(n.entries, idx, entry{child: newChild, dirty: true})
	return n, nil, nil
}

func (t *Tree) remove(n *node, key []byte, height int) (*node, *cid.Cid, error) {
	if height > n.height {
		return n, nil, nil
	}
	if height < n.height {
		return t.removeChild(n, key, height)
	}
	idx := n.findEntry(key)
	if idx < 0 {
		return n, nil, nil
	}
	n.dirty = true
	prev := n.entries[idx].val
	if idx > 0 && idx+1 < len(n.entries) && n.entries[idx-1].isChild() && n.entries[idx+1].isChild() {
		left, err := t.child(n, idx-1)
		if err != nil {
			return nil, nil, err
		}
		right, err := t.child(n, idx+1)
		if err != nil {
			return nil, nil, err
		}
		merged, err := t.merge(left, right)
		if err != nil {
			return nil, nil, err
		}
		n.entries = slices.Delete(n.entries, idx, idx+2)
		n.entries[idx-1] = entry{child: merged, dirty: true}
	} else {
		n.entries = slices.Delete(n.entries, idx, idx+1)
	}
	if err := t.proveMutation(n, key); err != nil {
		return nil, nil, err
	}
	return n, &prev, nil
}

// merge joins two adjacent subtrees of the same height.
func (t *Tree) merge(left, right *node) (*node, error) {
	idx := len(left.entries)
	n := &node{height: left.height, dirty: true, entries: make([]entry, 0, len(left.entries)+len(right.entries))}
	n.entries = append(n.entries, left.entries...)
	n.entries = append(n.entries, right.entries...)
	if idx > 0 && idx < len(n.entries) && n.entries[idx-1].isChild() && n.entries[idx].isChild() {
		ll, err := t.child(n, idx-1)
		if err != nil {
			return nil, err
		}
		lr, err := t.child(n, idx)
		if err != nil {
			return nil, err
		}
		lower, err := t.merge(ll, lr)
		if err != nil {
			return nil, err
		}
		n.entries[idx-1] = entry{child: lower, dirty: true}
		n.entries = slices.Delete(n.entries, idx, idx+1)
	}
	return n, nil
}

func (t *Tree) removeChild(n *node, key []byte, height int) (*node, *cid.Cid, error) {
	idx := n.findChild(key)
	if idx < 0 {
		return n, nil, nil
	}
	c, err := t.child(n, idx)
	if err != nil {
		return nil, nil, err
	}
	newChild, prev, err := t.remove(c, key, height)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		return n, nil, nil
	}
	n.dirty = true
	if !newChild.isEmpty() {
		n.entries[idx].child = newChild
		n.entries[idx].dirty = true
		return n, prev, nil
	}
	n.entries = slices.Delete(n.entries, idx, idx+1)
	return n, prev, nil
}

// Diff is the outcome of Commit.
type Diff struct {
	// Root is the CID of the new root node.
	Root cid.Cid
	// Blocks are the new nodes and the unchanged nodes that prove the
	// operations, as a sync-1.1 #commit must carry them. Each appears once.
	Blocks []Block
	// Removed are the CIDs of stored nodes that the new tree no longer links.
	Removed []cid.Cid
}

// Commit encodes every changed node and returns the diff since the tree was
// loaded (or since the previous Commit). The tree stays usable, clean.
func (t *Tree) Commit() (*Diff, error) {
	d := &Diff{}
	root, err := t.writeBlocks(t.root, &d.Blocks)
	if err != nil {
		return nil, err
	}
	d.Root = root
	// A loaded node is still linked iff some node of the new tree, which are
	// all in memory if they changed, still has its CID: node content is unique
	// because keys are.
	live := make(map[cid.Cid]struct{}, len(t.loaded))
	collectLoaded(t.root, live)
	for c := range t.loaded {
		if _, ok := live[c]; !ok {
			d.Removed = append(d.Removed, c)
		}
	}
	slices.SortFunc(d.Removed, func(a, b cid.Cid) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	t.loaded = map[cid.Cid]struct{}{}
	collectLoaded(t.root, t.loaded)
	return d, nil
}

// RootCID computes the root CID without producing blocks or clearing state.
func (t *Tree) RootCID() (cid.Cid, error) {
	return t.rootCID(t.root)
}

func (t *Tree) rootCID(n *node) (cid.Cid, error) {
	if !n.dirty && n.cid != nil {
		return *n.cid, nil
	}
	// Encode a copy of the entries so that dirty state is left intact.
	cp := &node{height: n.height, entries: slices.Clone(n.entries)}
	for i := range cp.entries {
		e := &cp.entries[i]
		if e.child != nil && (e.dirty || e.child.dirty || e.childCID == nil) {
			c, err := t.rootCID(e.child)
			if err != nil {
				return cid.Undef, err
			}
			e.childCID = &c
		}
	}
	_, c, err := cp.encode()
	return c, err
}

func collectLoaded(n *node, set map[cid.Cid]struct{}) {
	if n.cid != nil {
		set[*n.cid] = struct{}{}
	}
	for i := range n.entries {
		if c := n.entries[i].child; c != nil {
			collectLoaded(c, set)
		}
	}
}

// writeBlocks encodes the dirty part of subtree n, depth first, appending the
// blocks to out, and returns n's CID.
func (t *Tree) writeBlocks(n *node, out *[]Block) (cid.Cid, error) {
	if !n.dirty && n.cid != nil {
		return *n.cid, nil
	}
	for i := range n.entries {
		e := &n.entries[i]
		e.dirty = e.dirty && !e.isValue()
		if e.child != nil && (e.dirty || e.child.dirty || e.childCID == nil) {
			c, err := t.writeBlocks(e.child, out)
			if err != nil {
				return cid.Undef, err
			}
			e.childCID = &c
			e.dirty = false
		}
	}
	data, c, err := n.encode()
	if err != nil {
		return cid.Undef, err
	}
	n.cid = &c
	n.dirty = false
	*out = append(*out, Block{CID: c, Data: data})
	return c, nil
}

// errStop ends a walk early without an error.
var errStop = errors.New("stop")
