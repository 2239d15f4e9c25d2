package repo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// Data-model fixtures from the atproto interop tests (CC0), see
// ../testdata/README.md.
const (
	dataModelFixturesFile = "../testdata/data-model/data-model-fixtures.json"
	dataModelValidFile    = "../testdata/data-model/data-model-valid.json"
	dataModelInvalidFile  = "../testdata/data-model/data-model-invalid.json"
)

func readFixtureJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// fixtureB64 decodes unpadded standard base64, as the fixtures write it.
func fixtureB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}

func TestDataModelFixtures(t *testing.T) {
	var fixtures []struct {
		JSON       json.RawMessage `json:"json"`
		CBORBase64 string          `json:"cbor_base64"`
		CID        string          `json:"cid"`
	}
	readFixtureJSON(t, dataModelFixturesFile, &fixtures)
	if len(fixtures) == 0 {
		t.Fatal("no fixtures")
	}
	for i, f := range fixtures {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			// ParseRecordJSON takes objects only; every fixture today is
			// one, and a future non-object one is skipped, not failed.
			if trimmed := bytes.TrimSpace(f.JSON); len(trimmed) == 0 || trimmed[0] != '{' {
				t.Skipf("top-level value is not an object: %.40s", trimmed)
			}
			rec, err := ParseRecordJSON(f.JSON)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			c, data, err := EncodeRecord(rec)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if want := fixtureB64(t, f.CBORBase64); !bytes.Equal(data, want) {
				t.Fatalf("CBOR\n got %x\nwant %x", data, want)
			}
			if c.String() != f.CID {
				t.Fatalf("CID %s, want %s", c, f.CID)
			}
			// And back: the CBOR decodes to data that encodes the same.
			back, err := atdata.UnmarshalCBOR(data)
			if err != nil {
				t.Fatal(err)
			}
			c2, data2, err := EncodeRecord(back)
			if err != nil || c2 != c || !bytes.Equal(data2, data) {
				t.Fatalf("CBOR round trip: %v", err)
			}
		})
	}
}

func TestDataModelValidInvalid(t *testing.T) {
	type fixture struct {
		Note string          `json:"note"`
		JSON json.RawMessage `json:"json"`
	}
	var valid, invalid []fixture
	readFixtureJSON(t, dataModelValidFile, &valid)
	readFixtureJSON(t, dataModelInvalidFile, &invalid)
	if len(valid) == 0 || len(invalid) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range valid {
		t.Run("valid/"+f.Note, func(t *testing.T) {
			rec, err := ParseRecordJSON(f.JSON)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if _, _, err := EncodeRecord(rec); err != nil {
				t.Fatalf("encode: %v", err)
			}
		})
	}
	for _, f := range invalid {
		t.Run("invalid/"+f.Note, func(t *testing.T) {
			rec, err := ParseRecordJSON(f.JSON)
			if err == nil {
				// Some rules only show when encoding; either step may refuse.
				t.Logf("parsed; encoding must refuse it")
				_, _, err = EncodeRecord(rec)
			}
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("err = %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func mustParseRecordJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	m, err := ParseRecordJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestParseRecordJSONRejects covers JSON that never reaches Apply.
func TestParseRecordJSONRejects(t *testing.T) {
	for _, s := range []string{
		`{"$type": "app.bsky.feed.post", "n": 1.5}`,
		`{"$type": "app.bsky.feed.post", "l": {"$link": "not a cid"}}`,
		`{"$type": "app.bsky.feed.post", "l": {"$link": 5}}`,
		`{"$type": "app.bsky.feed.post", "b": {"$bytes": "!!!"}}`,
		`{"$type": "app.bsky.feed.post", "b": {"$bytes": 5}}`,
		`[1, 2]`,
		`"string"`,
		`null`,
		`{"$type": "app.bsky.feed.post",`,
		``,
		`{"$type": "app.bsky.feed.post", "s": "` + strings.Repeat("x", 2<<20) + `"}`,
	} {
		if _, err := ParseRecordJSON([]byte(s)); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%.60s: err = %v", s, err)
		}
	}
}

func TestApplyBadInput(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	mustApply(t, r, create("app.bsky.feed.post", "exists", post("there")))
	before := impStateOf(t, r)
	snap := snapshotDB(t, r.db)

	big := post("big")
	for i := range 3 {
		big[fmt.Sprintf("s%d", i)] = strings.Repeat("x", 400<<10) // 1.2 MB of CBOR in all
	}
	someCID, _, _ := EncodeRecord(post("other"))
	many := make([]Write, MaxWrites+1)
	for i := range many {
		many[i] = create("app.bsky.feed.post", fmt.Sprintf("m%d", i), post("m"))
	}
	type C = map[string]any
	cases := []struct {
		name   string
		writes []Write
		want   error
	}{
		{"no writes", nil, ErrInvalidWrite},
		{"float", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "f": 1.5})}, ErrInvalidRecord},
		{"float32", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "f": float32(1.5)})}, ErrInvalidRecord},
		{"malformed $link", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "l": C{"$link": "not a cid"}})}, ErrInvalidRecord},
		{"malformed $bytes", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "b": C{"$bytes": 12}})}, ErrInvalidRecord},
		{"unencodable value", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "c": make(chan int)})}, ErrInvalidRecord},
		{"func value", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "c": func() {}})}, ErrInvalidRecord},
		{"undefined CID", []Write{create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "l": atdata.CIDLink(cid.Undef)})}, ErrInvalidRecord},
		{"over 1 MiB of CBOR", []Write{create("app.bsky.feed.post", "a", big)}, ErrInvalidRecord},
		{"$type mismatch", []Write{create("app.bsky.feed.like", "a", post("x"))}, ErrInvalidRecord},
		{"$type missing", []Write{create("app.bsky.feed.post", "a", C{"text": "x"})}, ErrInvalidRecord},
		{"$type not a string", []Write{create("app.bsky.feed.post", "a", C{"$type": 5})}, ErrInvalidRecord},
		{"missing record", []Write{create("app.bsky.feed.post", "a", nil)}, ErrInvalidRecord},
		{"missing record on update", []Write{update("app.bsky.feed.post", "exists", nil)}, ErrInvalidRecord},
		{"rkey .", []Write{create("app.bsky.feed.post", ".", post("x"))}, ErrInvalidWrite},
		{"rkey ..", []Write{create("app.bsky.feed.post", "..", post("x"))}, ErrInvalidWrite},
		{"rkey a/b", []Write{create("app.bsky.feed.post", "a/b", post("x"))}, ErrInvalidWrite},
		{"rkey empty", []Write{create("app.bsky.feed.post", "", post("x"))}, ErrInvalidWrite},
		{"rkey too long", []Write{create("app.bsky.feed.post", strings.Repeat("a", 513), post("x"))}, ErrInvalidWrite},
		{"rkey with space", []Write{create("app.bsky.feed.post", "a b", post("x"))}, ErrInvalidWrite},
		{"delete with bad rkey", []Write{del("app.bsky.feed.post", "..")}, ErrInvalidWrite},
		{"collection not an NSID", []Write{create("post", "a", C{"$type": "post"})}, ErrInvalidWrite},
		{"collection empty", []Write{create("", "a", C{"$type": ""})}, ErrInvalidWrite},
		{"collection with slash", []Write{create("app.bsky/feed.post", "a", C{"$type": "app.bsky/feed.post"})}, ErrInvalidWrite},
		{"duplicate paths", []Write{create("app.bsky.feed.post", "a", post("1")), update("app.bsky.feed.post", "a", post("2"))}, ErrInvalidWrite},
		{"duplicate deletes", []Write{del("app.bsky.feed.post", "exists"), del("app.bsky.feed.post", "exists")}, ErrInvalidWrite},
		{"201 writes", many, ErrInvalidWrite},
		{"unknown action", []Write{{Action: "upsert", Collection: "app.bsky.feed.post", RKey: "a", Record: post("x")}}, ErrInvalidWrite},
		{"empty action", []Write{{Collection: "app.bsky.feed.post", RKey: "a", Record: post("x")}}, ErrInvalidWrite},
		{"create existing", []Write{create("app.bsky.feed.post", "exists", post("x"))}, ErrRecordExists},
		{"update missing", []Write{update("app.bsky.feed.post", "nope", post("x"))}, ErrRecordNotFound},
		{"delete missing", []Write{del("app.bsky.feed.post", "nope")}, ErrRecordNotFound},
		{"swapRecord on create", []Write{{Action: ActionCreate, Collection: "app.bsky.feed.post", RKey: "new", Record: post("x"), SwapRecord: &someCID}}, ErrInvalidSwap},
		{"swapRecord mismatch", []Write{{Action: ActionDelete, Collection: "app.bsky.feed.post", RKey: "exists", SwapRecord: &someCID}}, ErrInvalidSwap},
		{"good write then bad one", []Write{create("app.bsky.feed.post", "fine", post("ok")), create("app.bsky.feed.post", "..", post("x"))}, ErrInvalidWrite},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panic: %v", p)
					}
				}()
				_, err = r.Apply(ctx, tc.writes, nil)
			}()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			impAssertSame(t, before, impStateOf(t, r))
			assertSnapshot(t, r.db, snap)
		})
	}
	// A swapCommit that is not the head.
	if _, err := r.Apply(ctx, []Write{create("app.bsky.feed.post", "b", post("x"))}, &someCID); !errors.Is(err, ErrInvalidSwap) {
		t.Fatalf("swapCommit: %v", err)
	}
	assertSnapshot(t, r.db, snap)
	// And the same kinds of input, valid, are fine.
	mustApply(t, r,
		create("app.bsky.feed.post", "a", C{"$type": "app.bsky.feed.post", "i": int64(-5), "l": atdata.CIDLink(someCID), "b": atdata.Bytes{1, 2}}),
		create("app.bsky.feed.post", strings.Repeat("a", 512), post("longest rkey")),
		create("app.bsky.feed.post", "a:b-c_d~e.f", post("odd rkey")),
	)
	if _, err := r.GetRecord("app.bsky.feed.post", syntax.RecordKey(strings.Repeat("a", 512))); err != nil {
		t.Fatal(err)
	}
}

// TestIntegerFloat: a Go float64 with an integer value is stored as the
// integer, as JSON 2.0 is, never as a CBOR float.
func TestIntegerFloat(t *testing.T) {
	asInt, intData, err := EncodeRecord(map[string]any{"$type": "app.bsky.feed.post", "f": int64(2)})
	if err != nil {
		t.Fatal(err)
	}
	fromJSON := mustParseRecordJSON(t, `{"$type": "app.bsky.feed.post", "f": 2.0}`)
	for _, rec := range []map[string]any{{"$type": "app.bsky.feed.post", "f": float64(2)}, fromJSON} {
		c, data, err := EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if c != asInt || !bytes.Equal(data, intData) {
			t.Fatalf("%v encodes as %x, want %x", rec, data, intData)
		}
	}
	r := newTestRepo(t, Options{})
	mustApply(t, r, create("app.bsky.feed.post", "f", map[string]any{"$type": "app.bsky.feed.post", "f": float64(2)}))
	got, err := r.GetRecord("app.bsky.feed.post", "f")
	if err != nil || got.CID != asInt || !bytes.Equal(got.Data, intData) {
		t.Fatalf("stored %v %x", err, got.Data)
	}
}
