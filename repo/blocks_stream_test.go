package repo

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// TestWriteBlocksCARDedup reproduces the getBlocks amplification: one
// large block named 1,000 times. The CAR holds it once, and the writer
// never sees more than one chunk at a time.
func TestWriteBlocksCARDedup(t *testing.T) {
	ctx := context.Background()
	r := newTestRepo(t, Options{})
	c1 := mustApply(t, r, create("app.bsky.feed.post", "big", post(strings.Repeat("z", 800_000))))
	c2 := mustApply(t, r, create("app.bsky.feed.post", "small", post("s")))
	big, small := *c1.Ops[0].CID, *c2.Ops[0].CID
	names := []cid.Cid{small}
	for range 1000 {
		names = append(names, big)
	}
	var out maxWriteBuffer
	missing, err := r.WriteBlocksCAR(ctx, &out, names)
	if err != nil || len(missing) > 0 {
		t.Fatalf("missing %v, err %v", missing, err)
	}
	if out.Len() > 900_000 {
		t.Errorf("CAR of two blocks is %d bytes", out.Len())
	}
	if out.maxWrite > blockChunkBytes+900_000 {
		t.Errorf("one write of %d bytes", out.maxWrite)
	}
	got := impReadCAR(t, out.Bytes())
	if len(got.blocks) != 2 || len(got.order) != 2 || got.order[0] != small || got.order[1] != big {
		t.Fatalf("blocks %v", got.order)
	}
	// A missing CID: nothing written, and it is named.
	gone, _ := cid.Decode("bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
	out.Reset()
	missing, err = r.WriteBlocksCAR(ctx, &out, []cid.Cid{big, gone, gone})
	if err != nil || len(missing) != 1 || missing[0] != gone || out.Len() != 0 {
		t.Fatalf("missing %v err %v wrote %d", missing, err, out.Len())
	}
}

type maxWriteBuffer struct {
	bytes.Buffer
	maxWrite int
}

func (m *maxWriteBuffer) Write(p []byte) (int, error) {
	m.maxWrite = max(m.maxWrite, len(p))
	return m.Buffer.Write(p)
}
