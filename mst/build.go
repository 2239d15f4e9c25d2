package mst

import (
	"bytes"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Builder computes the tree of keys given in strictly increasing order,
// emitting each node block as soon as no later key can change it. It holds
// only the open node of each layer, so memory is proportional to the tree's
// height times its fan-out, not to the number of keys: it is how a
// repository of any size is proven to have the shape the spec makes of its
// keys (an import) without holding the tree.
//
// The blocks and root are exactly those a Tree with the same keys commits.
// A Builder is not safe for concurrent use.
type Builder struct {
	// layers[h] are the entries of the open node at height h.
	layers [][]entry
	prev   []byte
	emit   func(Block) error
	done   bool
}

// NewBuilder returns a Builder that passes every finished node block to emit,
// children before their parent, the root last. emit may keep the Block.
func NewBuilder(emit func(Block) error) *Builder {
	return &Builder{emit: emit}
}

// Add appends key with val. Keys must be valid and strictly increasing.
func (b *Builder) Add(key []byte, val cid.Cid) error {
	if b.done {
		return fmt.Errorf("mst: Add after Finish")
	}
	if !validKey(key) {
		return ErrInvalidKey
	}
	if b.prev != nil && bytes.Compare(b.prev, key) >= 0 {
		return fmt.Errorf("%w: %q after %q", ErrInvalidKey, key, b.prev)
	}
	h := HeightForKey(key)
	if h > MaxHeight {
		return fmt.Errorf("%w: height %d", ErrInvalidKey, h)
	}
	for len(b.layers) <= h {
		b.layers = append(b.layers, nil)
	}
	// The key ends the open nodes of every lower layer: what follows it
	// there belongs to new nodes to its right.
	for l := 0; l < h; l++ {
		if err := b.close(l); err != nil {
			return err
		}
	}
	k := bytes.Clone(key)
	b.layers[h] = append(b.layers[h], entry{key: k, val: val})
	b.prev = k
	return nil
}

// close encodes the open node of layer l, if it has entries, and links it
// from the open node of the layer above.
func (b *Builder) close(l int) error {
	if len(b.layers[l]) == 0 {
		return nil
	}
	c, err := b.encode(l)
	if err != nil {
		return err
	}
	b.layers[l] = b.layers[l][:0]
	b.layers[l+1] = append(b.layers[l+1], entry{childCID: &c})
	return nil
}

func (b *Builder) encode(l int) (cid.Cid, error) {
	n := node{entries: b.layers[l], height: l}
	data, c, err := n.encode()
	if err != nil {
		return cid.Undef, err
	}
	if err := b.emit(Block{CID: c, Data: data}); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// Finish closes every open node and returns the root CID. The tree of no
// keys is one empty node. The Builder cannot be used after.
func (b *Builder) Finish() (cid.Cid, error) {
	if b.done {
		return cid.Undef, fmt.Errorf("mst: Finish called twice")
	}
	b.done = true
	if len(b.layers) == 0 {
		b.layers = append(b.layers, nil)
	}
	top := len(b.layers) - 1
	for l := 0; l < top; l++ {
		if err := b.close(l); err != nil {
			return cid.Undef, err
		}
	}
	return b.encode(top)
}
