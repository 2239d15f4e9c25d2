package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHashPool: at most `workers` hashes run at once, callers beyond the
// queue are refused at once, and priority work gets through a full queue.
func TestHashPool(t *testing.T) {
	p := NewHashPool(2)
	ctx := context.Background()
	release := make(chan struct{})
	var running, peak atomic.Int64
	job := func() {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		<-release
		running.Add(-1)
	}
	var wg sync.WaitGroup
	var busy atomic.Int64
	for range 2 + hashQueue + 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Do(ctx, job); errors.Is(err, ErrHashBusy) {
				busy.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for busy.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := busy.Load(); got != 20 {
		t.Fatalf("%d callers refused, want 20 (2 running, %d queued)", got, hashQueue)
	}
	// The owner's login still runs, on the priority worker.
	done := make(chan error, 1)
	go func() { done <- p.Do(WithPriority(ctx), func() {}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("priority work did not get through a full queue")
	}
	close(release)
	wg.Wait()
	if peak.Load() != 2 {
		t.Fatalf("%d hashes ran at once, want 2", peak.Load())
	}
}

func TestNormalizeIdentifier(t *testing.T) {
	acct := &account{Identity: Identity{DID: "did:plc:abc", Handle: "alice.test", Email: "Alice@Example.com"}}
	for _, c := range []struct {
		id    string
		match bool
	}{
		{"alice.test", true},
		{" ALICE.Test ", true},
		{"alice.teſt", false}, // ſ folds to s under strings.EqualFold, not here
		{"alice.te\u017ft", false},
		{"ａlice.test", false}, // fullwidth: NFKC would make it alice.test
		{"alice.test.", false},
		{"did:plc:abc", true},
		{"alice@example.com", true},
		{"alice@example.coм", false},
	} {
		if got := acct.matches(c.id); got != c.match {
			t.Errorf("matches(%q) = %v, want %v", c.id, got, c.match)
		}
	}
}

func TestKnownAddrs(t *testing.T) {
	now := time.Unix(1000, 0)
	k := NewKnownAddrs(time.Hour, func() time.Time { return now })
	k.Remember("192.0.2.1/32")
	if !k.Known("192.0.2.1/32") || k.Known("192.0.2.2/32") {
		t.Fatal("known set wrong")
	}
	now = now.Add(2 * time.Hour)
	if k.Known("192.0.2.1/32") {
		t.Fatal("address still known after the ttl")
	}
	for i := range 2 * maxKnownAddrs {
		k.Remember(string(rune('a' + i)))
	}
	if len(k.seen) > maxKnownAddrs {
		t.Fatalf("%d addresses remembered", len(k.seen))
	}
}
