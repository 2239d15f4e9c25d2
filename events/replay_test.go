package events

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestReplaySharedAndBounded reproduces the replay attack in process:
// hundreds of consumers replay from storage and stop reading. Consumers at
// one cursor share one page; consumers at distinct cursors hold no more
// than the replay budget between them (the old code copied a 4 MB batch
// each). Once they read again, every one of them gets every event in order.
func TestReplaySharedAndBounded(t *testing.T) {
	s, _ := newSeq(t, Config{})
	const events = 10_000
	mustAppendN(t, s, events, 1000)

	run := func(t *testing.T, cursors []int64) {
		gate := make(chan struct{})
		var started, done sync.WaitGroup
		errs := make(chan error, len(cursors))
		for _, cur := range cursors {
			started.Add(1)
			done.Add(1)
			go func(cur int64) {
				defer done.Done()
				c := &collector{next: cur + 1, target: events}
				first := true
				err := s.Subscribe(context.Background(), &cur, noInfo, func(f []byte) error {
					if first {
						first = false
						started.Done()
						<-gate // a consumer that stopped reading
					}
					return c.send(f)
				})
				if !errors.Is(err, errStop) {
					errs <- err
				}
			}(cur)
		}
		waitDone := make(chan struct{})
		go func() { started.Wait(); close(waitDone) }()
		// Subscribers over the budget wait for a page: only those with one
		// have started; give the rest a moment to pile up.
		select {
		case <-waitDone:
		case <-time.After(2 * time.Second):
		}
		if got := s.pages.inUse(); got > replayBudget+replayPageBytes {
			t.Errorf("replay pages hold %d bytes for %d stalled consumers, budget %d", got, len(cursors), replayBudget)
		} else {
			t.Logf("%d stalled consumers: replay pages hold %d KiB", len(cursors), got>>10)
		}
		close(gate)
		done.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	t.Run("same cursor", func(t *testing.T) {
		cursors := make([]int64, 300)
		run(t, cursors)
		if got := s.pages.inUse(); got > replayBudget {
			t.Errorf("idle cache %d bytes over budget", got)
		}
	})
	t.Run("distinct cursors", func(t *testing.T) {
		// More than the budget holds: some wait for a page.
		cursors := make([]int64, 700)
		for i := range cursors {
			cursors[i] = int64(i * 13)
		}
		run(t, cursors)
	})
}
