package repo

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/ipfs/go-cid"
)

// CAR v1 framing. go-car/v2 reads CARs here; for writing we frame blocks
// ourselves because its writer keeps an index of every CID in memory, which a
// million-record export must not do.

// carHeader encodes the CAR v1 header {roots: [root], version: 1} as
// canonical DAG-CBOR, with its length prefix.
func carHeader(root cid.Cid) []byte { return carHeaderRoots([]cid.Cid{root}) }

// carHeaderRoots is carHeader for any number of roots (fewer than 24).
func carHeaderRoots(roots []cid.Cid) []byte {
	var h bytes.Buffer
	h.WriteByte(0xa2)            // map(2)
	h.Write([]byte("\x65roots")) // text(5)
	h.WriteByte(0x80 | byte(len(roots)))
	for _, root := range roots {
		rb := root.Bytes()
		h.Write([]byte{0xd8, 0x2a}) // tag(42): CID
		writeCBORBytesHeader(&h, len(rb)+1)
		h.WriteByte(0x00) // multibase identity prefix of a binary CID
		h.Write(rb)
	}
	h.Write([]byte("\x67version")) // text(7)
	h.WriteByte(0x01)
	out := binary.AppendUvarint(nil, uint64(h.Len()))
	return append(out, h.Bytes()...)
}

func writeCBORBytesHeader(w *bytes.Buffer, n int) {
	switch {
	case n < 24:
		w.WriteByte(0x40 | byte(n))
	case n < 256:
		w.Write([]byte{0x58, byte(n)})
	default:
		w.Write([]byte{0x59, byte(n >> 8), byte(n)})
	}
}

// writeCARBlock writes one length-prefixed CID+data section.
func writeCARBlock(w io.Writer, c cid.Cid, data []byte) error {
	cb := c.Bytes()
	var pre [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(pre[:], uint64(len(cb)+len(data)))
	if _, err := w.Write(pre[:n]); err != nil {
		return err
	}
	if _, err := w.Write(cb); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// carBuffer builds a small CAR in memory, once per block.
type carBuffer struct {
	buf  bytes.Buffer
	seen map[cid.Cid]struct{}
}

func newCARBuffer(root cid.Cid) *carBuffer {
	c := &carBuffer{seen: map[cid.Cid]struct{}{}}
	c.buf.Write(carHeader(root))
	return c
}

// add appends a block unless it is already in the CAR, and says which.
func (c *carBuffer) add(k cid.Cid, data []byte) bool {
	if _, ok := c.seen[k]; ok {
		return false
	}
	c.seen[k] = struct{}{}
	_ = writeCARBlock(&c.buf, k, data) // a bytes.Buffer does not fail
	return true
}

func (c *carBuffer) bytes() []byte { return c.buf.Bytes() }
