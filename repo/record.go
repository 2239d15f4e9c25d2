package repo

import (
	"bytes"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// MaxRecordBytes is the largest record we store, in DAG-CBOR bytes (the
// atproto data model limit).
const MaxRecordBytes = atdata.MAX_CBOR_RECORD_SIZE

// cidBuilder makes the CIDs of repository blocks: CIDv1, dag-cbor, sha2-256.
var cidBuilder = cid.NewPrefixV1(cid.DagCBOR, multihash.SHA2_256)

// ParseRecordJSON parses a record from JSON, checking the atproto data model
// ($link, $bytes, blobs, no floats, size). Errors wrap ErrInvalidRecord.
func ParseRecordJSON(b []byte) (map[string]any, error) {
	// atdata parses JSON null as an empty object.
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidRecord)
	}
	if err := jsonDepthOK(b); err != nil {
		return nil, err
	}
	m, err := atdata.UnmarshalJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	return m, nil
}

// hasFloat reports whether a decoded value holds a float anywhere.
func hasFloat(v any) bool {
	switch x := v.(type) {
	case float64, float32:
		return true
	case map[string]any:
		for _, e := range x {
			if hasFloat(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasFloat(e) {
				return true
			}
		}
	}
	return false
}

// encodedRecord is a record ready to store.
type encodedRecord struct {
	cid   cid.Cid
	data  []byte
	blobs []cid.Cid
}

// EncodeRecord returns the canonical DAG-CBOR of a record and its CID. The
// bytes are decoded again to check that they are valid atproto data, whatever
// built the map. Errors wrap ErrInvalidRecord.
func EncodeRecord(rec map[string]any) (cid.Cid, []byte, error) {
	e, err := encodeRecord(rec)
	if err != nil {
		return cid.Undef, nil, err
	}
	return e.cid, e.data, nil
}

func encodeRecord(rec map[string]any) (e encodedRecord, err error) {
	if rec == nil {
		return e, fmt.Errorf("%w: missing record", ErrInvalidRecord)
	}
	if err := depthOK(rec, 0); err != nil {
		return e, err
	}
	// The CBOR encoder panics on some values Go can hold (channels, funcs);
	// such a map is a bad record, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: cannot encode: %v", ErrInvalidRecord, r)
		}
	}()
	data, err := atdata.MarshalCBOR(rec)
	if err != nil {
		return e, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	if len(data) > MaxRecordBytes {
		return e, fmt.Errorf("%w: record is %d bytes of CBOR, over the limit of %d", ErrInvalidRecord, len(data), MaxRecordBytes)
	}
	parsed, err := atdata.UnmarshalCBOR(data)
	if err != nil {
		return e, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	// A Go float64 with an integer value was encoded as a CBOR float, which
	// the data model forbids, and parsed as an integer: store the parsed
	// value's encoding, as JSON 2.0 is stored as 2. Records parsed from
	// JSON by atdata hold no floats, so the usual write skips this.
	if hasFloat(rec) {
		canon, err := atdata.MarshalCBOR(parsed)
		if err != nil {
			return e, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
		}
		data = canon
	}
	c, err := cidBuilder.Sum(data)
	if err != nil {
		return e, err
	}
	e = encodedRecord{cid: c, data: data}
	for _, b := range atdata.ExtractBlobs(parsed) {
		e.blobs = append(e.blobs, b.Ref.CID())
	}
	return e, nil
}
