package repo

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// Record is a stored record: its CID and DAG-CBOR bytes.
type Record struct {
	Collection syntax.NSID
	RKey       syntax.RecordKey
	CID        cid.Cid
	Data       []byte
}

// GetRecord returns the record at collection/rkey, or ErrRecordNotFound.
func (r *Repo) GetRecord(collection syntax.NSID, rkey syntax.RecordKey) (*Record, error) {
	var out *Record
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(collection.String() + "/" + rkey.String()))
		if v == nil {
			return fmt.Errorf("%w: %s/%s", ErrRecordNotFound, collection, rkey)
		}
		rec, err := loadRecord(tx, collection, rkey, v)
		out = rec
		return err
	})
	return out, err
}

func loadRecord(tx *bolt.Tx, collection syntax.NSID, rkey syntax.RecordKey, cidBytes []byte) (*Record, error) {
	_, c, err := cid.CidFromBytes(cidBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: record index: %v", ErrCorrupt, err)
	}
	data, err := txSource{tx.Bucket(bucketBlocks)}.GetBlock(c)
	if err != nil {
		return nil, fmt.Errorf("%w: record %s/%s: %v", ErrCorrupt, collection, rkey, err)
	}
	return &Record{Collection: collection, RKey: rkey, CID: c, Data: bytes.Clone(data)}, nil
}

// MaxListLimit bounds ListRecords pages, as the lexicon does.
const MaxListLimit = 100

// ListRecords returns up to limit records of a collection in record key
// order, descending if asked (listRecords without reverse=true), starting
// after cursor (a record key; ""
// for the start). The second result is the cursor of the next page, "" at the
// end.
func (r *Repo) ListRecords(collection syntax.NSID, cursor string, limit int, descending bool) ([]Record, string, error) {
	if limit <= 0 || limit > MaxListLimit {
		limit = MaxListLimit
	}
	prefix := []byte(collection.String() + "/")
	var out []Record
	next := ""
	err := r.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		var k, v []byte
		switch {
		case !descending && cursor == "":
			k, v = c.Seek(prefix)
		case !descending:
			k, v = c.Seek(append(bytes.Clone(prefix), cursor...))
			if k != nil && bytes.Equal(k[len(prefix):], []byte(cursor)) {
				k, v = c.Next()
			}
		default:
			// Seek lands at the first key >= the bound; the one before it is
			// the last key below it.
			bound := append(bytes.Clone(prefix[:len(prefix)-1]), '/'+1) // end of the collection
			if cursor != "" {
				bound = append(bytes.Clone(prefix), cursor...)
			}
			if k, _ = c.Seek(bound); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for k != nil && bytes.HasPrefix(k, prefix) {
			if len(out) == limit {
				next = out[len(out)-1].RKey.String()
				return nil
			}
			rkey, err := syntax.ParseRecordKey(string(k[len(prefix):]))
			if err != nil {
				return fmt.Errorf("%w: record index key %q", ErrCorrupt, k)
			}
			rec, err := loadRecord(tx, collection, rkey, v)
			if err != nil {
				return err
			}
			out = append(out, *rec)
			if descending {
				k, v = c.Prev()
			} else {
				k, v = c.Next()
			}
		}
		return nil
	})
	return out, next, err
}

// Collections returns the collections that hold at least one record, in
// order, for describeRepo. It costs one seek per collection.
func (r *Repo) Collections() ([]syntax.NSID, error) {
	var out []syntax.NSID
	err := r.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, _ := c.First(); k != nil; {
			i := bytes.IndexByte(k, '/')
			if i <= 0 {
				return fmt.Errorf("%w: record index key %q", ErrCorrupt, k)
			}
			nsid, err := syntax.ParseNSID(string(k[:i]))
			if err != nil {
				return fmt.Errorf("%w: record index key %q", ErrCorrupt, k)
			}
			out = append(out, nsid)
			// Skip the rest of this collection: '/'+1 sorts after all its keys.
			k, _ = c.Seek(append(bytes.Clone(k[:i]), '/'+1))
		}
		return nil
	})
	// Index order puts "a.b.c.d/…" before "a.b.c/…" ('.' < '/'); answer in
	// NSID order.
	slices.Sort(out)
	return out, err
}

// Blocks returns the stored blocks among cids, and the CIDs it does not
// hold. Only blocks reachable from the head are stored.
func (r *Repo) Blocks(cids []cid.Cid) (found []Block, missing []cid.Cid, err error) {
	err = r.db.View(func(tx *bolt.Tx) error {
		src := txSource{tx.Bucket(bucketBlocks)}
		for _, c := range cids {
			data, err := src.GetBlock(c)
			if err != nil {
				missing = append(missing, c)
				continue
			}
			found = append(found, Block{CID: c, Data: bytes.Clone(data)})
		}
		return nil
	})
	return found, missing, err
}

// Block is a stored block with its CID.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// WriteCAR writes a CAR v1 of blocks with the given roots (none is allowed).
func WriteCAR(w io.Writer, roots []cid.Cid, blocks []Block) error {
	if _, err := w.Write(carHeaderRoots(roots)); err != nil {
		return err
	}
	for _, b := range blocks {
		if err := writeCARBlock(w, b.CID, b.Data); err != nil {
			return err
		}
	}
	return nil
}
