package repo

import (
	"errors"
	"strings"
	"testing"
)

// nestedJSON is a record whose "v" holds n-1 more levels of objects or
// arrays (the record itself is level 1).
func nestedJSON(n int, array bool) string {
	open, close := `{"a":`, `}`
	if array {
		open, close = `[`, `]`
	}
	return `{"$type":"app.bsky.feed.post","text":"[{\"","v":` + strings.Repeat(open, n-1) + `1` + strings.Repeat(close, n-1) + `}`
}

func TestRecordDepth(t *testing.T) {
	for _, c := range []struct {
		depth int
		array bool
		ok    bool
	}{
		{MaxRecordDepth, false, true},
		{MaxRecordDepth, true, true},
		{MaxRecordDepth + 1, false, false},
		{MaxRecordDepth + 1, true, false},
		{9000, false, false},
	} {
		rec, err := ParseRecordJSON([]byte(nestedJSON(c.depth, c.array)))
		if c.ok != (err == nil) {
			t.Fatalf("depth %d array %v: ParseRecordJSON err %v", c.depth, c.array, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("depth %d: %v is not ErrInvalidRecord", c.depth, err)
		}
		if rec != nil {
			if _, _, err := EncodeRecord(rec); err != nil {
				t.Fatalf("depth %d: EncodeRecord: %v", c.depth, err)
			}
		}
	}
	// A map built in Go (not parsed from JSON) is checked too.
	deep := map[string]any{"$type": "app.bsky.feed.post"}
	cur := deep
	for range MaxRecordDepth {
		next := map[string]any{}
		cur["a"] = next
		cur = next
	}
	if _, _, err := EncodeRecord(deep); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("EncodeRecord of %d levels: %v", MaxRecordDepth+1, err)
	}
}
