package repo

import (
	"context"
	"testing"
)

func TestApplyVerifiesWithIndigo(t *testing.T) {
	r := newTestRepo(t, Options{})
	pub, _ := r.key.PublicKey()
	first, err := r.Init(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	verifyCommit(t, first, pub, nil)
	prev := first
	steps := [][]Write{
		{create("app.bsky.feed.post", "3jzfcijpj2z2a", post("hello"))},
		{create("app.bsky.feed.post", "3jzfcijpj2z2b", post("two")), create("app.bsky.feed.like", "3jzfcijpj2z2c", map[string]any{"$type": "app.bsky.feed.like"})},
		{update("app.bsky.feed.post", "3jzfcijpj2z2a", post("edited"))},
		{del("app.bsky.feed.post", "3jzfcijpj2z2b")},
	}
	for _, ws := range steps {
		c := mustApply(t, r, ws...)
		verifyCommit(t, c, pub, prev)
		prev = c
	}
}
