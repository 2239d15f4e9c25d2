package main

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// idleGarbage is how much heap beyond the live set (garbage not yet
// collected, plus freed pages not yet given back) an idle server may keep.
const idleGarbage = 4 << 20

// releaseIdleMemory gives memory back to the kernel once the server has
// gone quiet. The Go runtime collects only when allocation reaches the heap
// goal, and a server with one account is idle most of the time: after a
// burst of work its garbage stays resident until the next allocation
// burst or the runtime's forced collection (every 2 minutes), and the
// background scavenger returns freed pages gradually. The biggest such
// allocation is a password hash (scrypt takes 16 MiB per hash: creating
// the account left ~32 MiB of private memory behind on a server whose live
// heap is ~3 MiB); large CARs are others.
//
// Every period it looks at the runtime's own counters; if no collection
// ran during the whole last period (nobody is allocating) and the heap
// holds more than idleGarbage beyond what the last collection found live,
// it collects and returns the free pages at once (debug.FreeOSMemory),
// which costs a few milliseconds of CPU for a heap of a few MiB. A busy
// server collects on its own and is left alone.
func releaseIdleMemory(ctx context.Context, every time.Duration) {
	samples := []rtmetrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastCycles, releasedAt uint64
	released := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rtmetrics.Read(samples)
		cycles, allocs := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		if cycles != lastCycles {
			lastCycles = cycles // busy: the runtime is collecting on its own
			continue
		}
		if released && allocs-releasedAt < idleGarbage {
			continue // nothing new since the last release
		}
		held := samples[3].Value.Uint64() + samples[4].Value.Uint64() + samples[5].Value.Uint64()
		if held <= samples[2].Value.Uint64()+idleGarbage {
			continue
		}
		debug.FreeOSMemory()
		// FreeOSMemory's own collection is not new work.
		rtmetrics.Read(samples[:2])
		lastCycles, releasedAt, released = samples[0].Value.Uint64(), samples[1].Value.Uint64(), true
	}
}
