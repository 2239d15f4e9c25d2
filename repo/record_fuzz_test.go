package repo

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
)

// checkReencode holds a decoded record to the encoder's contract: it
// encodes or fails with ErrInvalidRecord, and what it encodes decodes again
// to the same bytes and CID (the stored form is canonical and stable).
func checkReencode(t *testing.T, rec map[string]any) {
	t.Helper()
	c1, d1, err := EncodeRecord(rec)
	if err != nil {
		if !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("EncodeRecord: error not ErrInvalidRecord: %v", err)
		}
		return
	}
	again, err := atdata.UnmarshalCBOR(d1)
	if err != nil {
		t.Fatalf("the encoded record does not decode: %v", err)
	}
	c2, d2, err := EncodeRecord(again)
	if err != nil {
		t.Fatalf("the decoded record does not encode again: %v", err)
	}
	if c1 != c2 || !bytes.Equal(d1, d2) {
		t.Fatalf("re-encoding changed the record: %s, then %s", c1, c2)
	}
}

// FuzzRecordCBOR: a record arriving as DAG-CBOR (an imported repository,
// a block from a peer) never panics the decoder or the encoder.
func FuzzRecordCBOR(f *testing.F) {
	for _, rec := range []map[string]any{
		post("hello"),
		{"$type": "com.example.x", "n": int64(-5), "b": atdata.Bytes{1, 2, 3}, "a": []any{true, nil, "s"}, "m": map[string]any{"k": "v"}},
	} {
		_, data, err := EncodeRecord(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{0xa1, 0x65, '$', 't', 'y', 'p', 'e', 0x64, 'b', 'l', 'o', 'b'}) // {"$type":"blob"}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xf9, 0x3c, 0x00}) // a half float
	f.Add([]byte{0xbf, 0xff})       // an indefinite map
	f.Add([]byte{0xd8, 0x2a, 0x41, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := atdata.UnmarshalCBOR(b)
		if err != nil {
			return
		}
		checkReencode(t, rec)
	})
}

// FuzzRecordJSON: a record arriving as JSON (createRecord, putRecord,
// applyWrites) parses or fails with ErrInvalidRecord, never panics, and
// what it stores is stable.
func FuzzRecordJSON(f *testing.F) {
	for _, s := range []string{
		`{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2026-11-29T12:00:00.000Z"}`,
		`{"$type":"com.example.x","b":{"$bytes":"AAEC"},"l":{"$link":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie"}}`,
		`{"img":{"$type":"blob","ref":{"$link":"bafkreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie"},"mimeType":"image/png","size":-1}}`,
		`{"legacy":{"cid":"bafkreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5fekbfokcqiqpie","mimeType":"image/png"}}`,
		`{"n":1.0,"m":1e2,"k":9007199254740993}`,
		`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		`{"$type":""}`, `null`, `[]`, `{"\u0000":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := ParseRecordJSON(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("ParseRecordJSON: error not ErrInvalidRecord: %v", err)
			}
			return
		}
		checkReencode(t, rec)
	})
}
