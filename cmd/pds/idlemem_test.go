package main

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

var sinkIdle []byte

// TestReleaseIdleMemory: garbage left by a burst (64 MiB here; a sign-in's
// scrypt buffers in the server) is given back to the kernel once nothing
// allocates, long before the runtime's own 2-minute forced collection.
func TestReleaseIdleMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc (Linux) to read RssAnon")
	}
	// Make the 64 MiB live at a collection, so that the heap goal is
	// above 128 MiB and dropping it leaves garbage no collection will
	// come for while nothing allocates.
	sinkIdle = make([]byte, 64<<20)
	for i := 0; i < len(sinkIdle); i += 4096 {
		sinkIdle[i] = 1 // touch every page: resident
	}
	runtime.GC()
	before := readRssAnon(os.Getpid())
	sinkIdle = nil

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); releaseIdleMemory(ctx, 50*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		now := readRssAnon(os.Getpid())
		if now < before-48<<20 {
			t.Logf("RssAnon %.1f MiB → %.1f MiB", mib(before), mib(now))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RssAnon still %.1f MiB (was %.1f with the 64 MiB buffer live)", mib(now), mib(before))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
