package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/pdsbox/pds/blobstore"
)

// checkRKeyType holds a record key to the key type of its collection's
// lexicon ("tid", "nsid", "literal:<value>" or "any"). Collections without
// a lexicon here take any valid record key. The reference PDS leaves this
// as a TODO; the AppView indexes posts, likes and follows by TID, and a
// profile only at "self", so a record at another key is lost to it.
func (s *server) checkRKeyType(coll syntax.NSID, rkey syntax.RecordKey) error {
	if s.lex == nil {
		return nil
	}
	sch, err := s.lex.Resolve(coll.String())
	if err != nil {
		return nil // no lexicon: any key
	}
	rec, ok := sch.Def.(lexicon.SchemaRecord)
	if !ok {
		return invalidRequest("Invalid collection: %s is not a record type", coll)
	}
	switch k := rec.Key; {
	case k == "tid":
		if _, err := syntax.ParseTID(rkey.String()); err != nil {
			return invalidRequest("Invalid record key for %s: %q is not a TID (the lexicon's key type is tid)", coll, rkey)
		}
	case k == "nsid":
		if _, err := syntax.ParseNSID(rkey.String()); err != nil {
			return invalidRequest("Invalid record key for %s: %q is not an NSID (the lexicon's key type is nsid)", coll, rkey)
		}
	case len(k) > 8 && k[:8] == "literal:":
		if rkey.String() != k[8:] {
			return invalidRequest("Invalid record key for %s: must be %q, not %q", coll, k[8:], rkey)
		}
	}
	return nil
}

// checkBlobRefs holds every blob reference of a record to the data model
// and to the blob it names: size a non-negative integer, the ref a raw
// sha2-256 CID, and, for a blob stored here, the mime type and size the
// upload recorded (the reference's InvalidMimeType). Whether the blob exists
// is checked in the write transaction (BlobNotFound), not here.
func (s *server) checkBlobRefs(ctx context.Context, raw json.RawMessage, rec map[string]any) error {
	if err := checkBlobSizes(raw); err != nil {
		return err
	}
	for _, b := range atdata.ExtractBlobs(rec) {
		c := b.Ref.CID()
		if c.Prefix().Codec != cid.Raw || c.Prefix().MhType != multihash.SHA2_256 {
			return xerr(http.StatusBadRequest, "InvalidBlob", "Invalid blob ref %s: a blob is a raw (0x55) sha2-256 CID", c)
		}
		if s.blobs == nil {
			continue
		}
		info, err := s.blobs.Stat(ctx, c)
		if errors.Is(err, blobstore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if b.MimeType != info.MimeType {
			return xerr(http.StatusBadRequest, "InvalidMimeType", "Referenced Mimetype does not match stored blob. Expected: %s, Got: %s", info.MimeType, b.MimeType)
		}
		if b.Size >= 0 && b.Size != info.Size {
			return xerr(http.StatusBadRequest, "InvalidBlob", "Referenced size does not match stored blob. Expected: %d, Got: %d", info.Size, b.Size)
		}
	}
	return nil
}

// checkBlobSizes walks the JSON of a record for typed blobs ($type "blob")
// and refuses a size that is not a non-negative integer: the data model
// parser takes a negative size for the legacy marker and would store the
// blob in the legacy form.
func checkBlobSizes(raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return describeJSONErrorAt("Input/record", err)
	}
	return walkBlobSizes(v, "record", 0)
}

func walkBlobSizes(v any, path string, depth int) error {
	if depth > 64 { // the data model parser bounds depth too
		return invalidRequest("Invalid record: nested too deeply")
	}
	switch x := v.(type) {
	case map[string]any:
		if x["$type"] == "blob" {
			n, ok := x["size"].(json.Number)
			if !ok {
				return invalidRequest("Invalid blob at %s: size must be an integer", path)
			}
			if i, err := n.Int64(); err != nil || i < 0 {
				return invalidRequest("Invalid blob at %s: size must be a non-negative integer, not %s", path, n)
			}
		}
		for k, e := range x {
			if err := walkBlobSizes(e, path+"."+k, depth+1); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := walkBlobSizes(e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
