package main

import (
	"hash/fnv"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// testTID is the n-th of a fixed sequence of valid TIDs, for record keys of
// collections whose lexicon wants one (app.bsky.feed.post).
func testTID(n int) string {
	return syntax.NewTID(1_700_000_000_000_000+int64(n), 0).String()
}

// nameTID is a TID derived from a name, so that a test can say "seed" and
// write at a key the post lexicon accepts; the same name gives the same key.
func nameTID(name string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	return testTID(int(h.Sum64() % (1 << 40)))
}
