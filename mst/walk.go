package mst

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// errStopWalk, returned by a Walk callback, ends the walk early; Walk then
// returns nil. Control flow inside this package only (its tests stop walks
// with it); callers outside stop a walk with an error of their own.
var errStopWalk = errors.New("mst: stop walk")

// Walk calls fn for each key/value in key order, starting at the first key at
// or after from (nil: the first key). With reverse, it goes in descending order
// from the last key at or before from (nil: the last key).
//
// Nodes that the tree has not loaded are read for the walk and dropped after,
// so memory stays proportional to the tree height. fn must not modify the tree.
func (t *Tree) Walk(from []byte, reverse bool, fn func(key []byte, val cid.Cid) error) error {
	err := t.walk(t.root, from, reverse, fn)
	if errors.Is(err, errStopWalk) {
		return nil
	}
	return err
}

// peekChild returns entry i's child without attaching it to the tree.
func (t *Tree) peekChild(n *node, i int) (*node, error) {
	e := &n.entries[i]
	if e.child != nil {
		return e.child, nil
	}
	if e.childCID == nil || n.height <= 0 {
		return nil, fmt.Errorf("%w: bad child pointer", ErrMalformedNode)
	}
	data, err := t.src.GetBlock(*e.childCID)
	if err != nil {
		return nil, fmt.Errorf("mst: reading node %s: %w", *e.childCID, err)
	}
	return decodeNode(data, *e.childCID, n.height-1, false)
}

func (t *Tree) walk(n *node, from []byte, reverse bool, fn func([]byte, cid.Cid) error) error {
	last := len(n.entries) - 1
	for j := range n.entries {
		i := j
		if reverse {
			i = last - j
		}
		e := &n.entries[i]
		if e.isValue() {
			if from != nil && ((!reverse && bytes.Compare(e.key, from) < 0) || (reverse && bytes.Compare(e.key, from) > 0)) {
				continue
			}
			if err := fn(e.key, e.val); err != nil {
				return err
			}
			continue
		}
		// Skip a subtree wholly before (or after, in reverse) the start: the
		// value beyond it bounds all its keys.
		if from != nil {
			if !reverse && i+1 <= last && bytes.Compare(n.entries[i+1].key, from) < 0 {
				continue
			}
			if reverse && i > 0 && bytes.Compare(n.entries[i-1].key, from) > 0 {
				continue
			}
		}
		c, err := t.peekChild(n, i)
		if err != nil {
			return err
		}
		if err := t.walk(c, from, reverse, fn); err != nil {
			return err
		}
	}
	return nil
}

// Proof returns the encoded nodes on the path from the root to where key is
// or would be: enough for a verifier holding the root CID to prove the key's
// value, or its absence. The tree must have no uncommitted changes.
func (t *Tree) Proof(key []byte) ([]Block, error) {
	if !validKey(key) {
		return nil, ErrInvalidKey
	}
	if t.root.dirty || t.root.cid == nil {
		return nil, fmt.Errorf("mst: proof of a tree with uncommitted changes")
	}
	height := HeightForKey(key)
	var out []Block
	n := t.root
	for {
		data, c, err := n.encode()
		if err != nil {
			return nil, err
		}
		out = append(out, Block{CID: c, Data: data})
		if height >= n.height {
			return out, nil
		}
		i := n.findChild(key)
		if i < 0 {
			return out, nil
		}
		if n, err = t.peekChild(n, i); err != nil {
			return nil, err
		}
	}
}
