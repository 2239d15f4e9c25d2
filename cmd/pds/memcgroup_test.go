package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memCgroup is a memory cgroup made for one test run: cgroup v2 (a child
// of the root of the unified hierarchy, where the memory controller can be
// enabled whatever processes live elsewhere) or, on a hybrid host whose
// memory controller is on v1, a child of this process's v1 memory cgroup.
// Both give what the test needs: a hard limit, current use, the peak, an
// OOM-kill counter and the anon/file split.
type memCgroup struct {
	dir string
	v2  bool
}

// errNoCgroup says why no memory cgroup can be made here.
var errNoCgroup = errors.New("no writable memory cgroup")

// newMemCgroup creates a memory cgroup limited to limit bytes (no swap);
// it is removed when the test ends (after the caller's processes exit).
func newMemCgroup(tb testing.TB, limit int64) (*memCgroup, error) {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: not root", errNoCgroup)
	}
	name := fmt.Sprintf("pds-memtest-%d", os.Getpid())
	var cg *memCgroup
	switch {
	case fileHas("/sys/fs/cgroup/cgroup.controllers", "memory"):
		cg = &memCgroup{dir: filepath.Join("/sys/fs/cgroup", name), v2: true}
	case fileHas("/sys/fs/cgroup/unified/cgroup.controllers", "memory"):
		cg = &memCgroup{dir: filepath.Join("/sys/fs/cgroup/unified", name), v2: true}
	default:
		own := v1MemoryPath()
		if own == "" {
			return nil, fmt.Errorf("%w: neither cgroup v2 with the memory controller nor a v1 memory hierarchy", errNoCgroup)
		}
		cg = &memCgroup{dir: filepath.Join("/sys/fs/cgroup/memory", own, name)}
	}
	if cg.v2 {
		parent := filepath.Dir(cg.dir)
		if !fileHas(filepath.Join(parent, "cgroup.subtree_control"), "memory") {
			if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
				return nil, fmt.Errorf("%w: enabling the memory controller: %v", errNoCgroup, err)
			}
		}
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoCgroup, err)
	}
	tb.Cleanup(func() {
		// The kernel refuses while the last process is still leaving.
		for i := 0; i < 100; i++ {
			if err := os.Remove(cg.dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		tb.Errorf("could not remove cgroup %s", cg.dir)
	})
	lim := strconv.FormatInt(limit, 10)
	writes := [][2]string{{"memory.max", lim}, {"memory.swap.max", "0"}}
	if !cg.v2 {
		writes = [][2]string{{"memory.limit_in_bytes", lim}, {"memory.memsw.limit_in_bytes", lim}, {"memory.swappiness", "0"}}
	}
	for i, w := range writes {
		err := os.WriteFile(filepath.Join(cg.dir, w[0]), []byte(w[1]), 0o644)
		if err != nil && i == 0 {
			return nil, fmt.Errorf("%w: setting %s: %v", errNoCgroup, w[0], err)
		}
		// The swap settings are optional: a kernel without swap
		// accounting has no such file, and then there is no swap to limit.
	}
	return cg, nil
}

// v1MemoryPath is this process's cgroup in the v1 memory hierarchy, if it
// is mounted at /sys/fs/cgroup/memory.
func v1MemoryPath() string {
	if _, err := os.Stat("/sys/fs/cgroup/memory/cgroup.procs"); err != nil {
		return ""
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && slicesContains(strings.Split(parts[1], ","), "memory") {
			return parts[2]
		}
	}
	return ""
}

func slicesContains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func fileHas(path, word string) bool {
	b, err := os.ReadFile(path)
	return err == nil && slicesContains(strings.Fields(string(b)), word)
}

// procs is the file a process writes its pid to in order to join.
func (c *memCgroup) procs() string { return filepath.Join(c.dir, "cgroup.procs") }

func (c *memCgroup) readInt(name string) int64 {
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// keyed reads a "key value" file (memory.stat, memory.events,
// memory.oom_control).
func (c *memCgroup) keyed(name string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out
}

// current is the memory charged to the cgroup now: the processes'
// anonymous memory plus the page cache they brought in (file pages,
// including the mapped database), plus kernel memory.
func (c *memCgroup) current() int64 {
	if c.v2 {
		return c.readInt("memory.current")
	}
	return c.readInt("memory.usage_in_bytes")
}

// peak is the kernel's own high-water mark of current (-1 if the kernel
// keeps none).
func (c *memCgroup) peak() int64 {
	if c.v2 {
		return c.readInt("memory.peak")
	}
	return c.readInt("memory.max_usage_in_bytes")
}

// oomKills counts processes the kernel killed for this cgroup's limit.
func (c *memCgroup) oomKills() int64 {
	if c.v2 {
		return c.keyed("memory.events")["oom_kill"]
	}
	return c.keyed("memory.oom_control")["oom_kill"]
}

// limitHits counts how often use reached the limit (and the kernel had
// to reclaim to go on).
func (c *memCgroup) limitHits() int64 {
	if c.v2 {
		return c.keyed("memory.events")["max"]
	}
	return c.readInt("memory.failcnt")
}

// split is the anonymous and the file-backed (page cache) part of the
// charge.
func (c *memCgroup) split() (anon, file int64) {
	st := c.keyed("memory.stat")
	if c.v2 {
		return st["anon"], st["file"]
	}
	return st["total_rss"], st["total_cache"]
}

// contains reports whether pid is in this cgroup.
func (c *memCgroup) contains(pid int) bool {
	b, err := os.ReadFile(c.procs())
	return err == nil && slicesContains(strings.Fields(string(b)), strconv.Itoa(pid))
}
