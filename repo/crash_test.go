package repo

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/ipfs/go-cid"
	bolt "go.etcd.io/bbolt"
)

// The kill -9 test: a helper process (this test binary, re-executed) applies
// a stream of writes to a bbolt file and reports each batch before Apply
// ("pending") and each acknowledged commit after Apply returns ("ack"). The
// parent kills it with SIGKILL at a random point, reopens the file and checks
// that no acknowledged commit is lost, that the head is either the last
// acknowledged commit or the one pending after it, never a mix, and that the
// stored repository is complete (checkIntegrity).

const (
	crashEnvDB   = "PDS_CRASH_HELPER_DB"
	crashEnvKey  = "PDS_CRASH_HELPER_KEY"
	crashEnvSeed = "PDS_CRASH_HELPER_SEED"
	crashPrefix  = "CRASH "
	// crashEvents is the bucket the helper's BeforeCommit hook writes, as the
	// sequencer would: rev → commit CID. No commit may exist without it.
	crashEvents = "crash_test_events"
)

// crashLine is one line of the helper's report.
type crashLine struct {
	Kind string `json:"kind"` // "pending" or "ack"
	// pending: the batch's effect, path → record CID ("" for a delete).
	Writes map[string]string `json:"writes,omitempty"`
	// ack: the commit.
	Rev  string `json:"rev,omitempty"`
	CID  string `json:"cid,omitempty"`
	Data string `json:"data,omitempty"`
}

func crashRecord(coll string, v int) map[string]any {
	return map[string]any{"$type": coll, "v": int64(v), "text": strings.Repeat("x", v*10)}
}

// TestCrashHelper is the helper process; it does nothing in a normal run.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		t.Skip("helper process for TestCrashKill9")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash helper:", err)
		os.Exit(2)
	}
	kb, err := hex.DecodeString(os.Getenv(crashEnvKey))
	if err != nil {
		fail(err)
	}
	key, err := atcrypto.ParsePrivateBytesK256(kb)
	if err != nil {
		fail(err)
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashEnvSeed), 10, 64)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		fail(err)
	}
	r, err := Open(db, testDID, key, Options{BeforeCommit: func(tx *bolt.Tx, c *Commit) error {
		b, err := tx.CreateBucketIfNotExists([]byte(crashEvents))
		if err != nil {
			return err
		}
		return b.Put([]byte(c.Rev), c.CID.Bytes())
	}})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if _, err := r.Init(ctx); err != nil {
		fail(err)
	}
	model, err := readRecordIndex(db)
	if err != nil {
		fail(err)
	}
	report := func(l crashLine) {
		b, _ := json.Marshal(l)
		// One write per line, unbuffered: what the parent has read was
		// printed before the kill.
		if _, err := os.Stdout.Write(append([]byte(crashPrefix), append(b, '\n')...)); err != nil {
			os.Exit(3) // the parent is gone
		}
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	colls := []string{"app.bsky.feed.post", "app.bsky.feed.like"}
	deadline := time.Now().Add(60 * time.Second) // never outlive a lost parent
	for time.Now().Before(deadline) {
		n := 1 + rng.IntN(20)
		var ws []Write
		eff := map[string]string{}
		paths := make([]string, 0, len(model))
		for p := range model {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for tries := 0; len(ws) < n && tries < 100; tries++ {
			var w Write
			switch k := rng.IntN(10); {
			case k < 5 || len(paths) == 0:
				coll := colls[rng.IntN(len(colls))]
				w = create(coll, rkeyN(rng.IntN(600)), crashRecord(coll, rng.IntN(6)))
				if _, ok := model[w.Path()]; ok {
					continue
				}
			case k < 8:
				p := paths[rng.IntN(len(paths))]
				coll, rkey, _ := strings.Cut(p, "/")
				w = update(coll, rkey, crashRecord(coll, rng.IntN(6)))
			default:
				p := paths[rng.IntN(len(paths))]
				coll, rkey, _ := strings.Cut(p, "/")
				w = del(coll, rkey)
			}
			if _, dup := eff[w.Path()]; dup {
				continue
			}
			eff[w.Path()] = ""
			if w.Record != nil {
				c, _, err := EncodeRecord(w.Record)
				if err != nil {
					fail(err)
				}
				eff[w.Path()] = c.String()
			}
			ws = append(ws, w)
		}
		report(crashLine{Kind: "pending", Writes: eff})
		c, err := r.Apply(ctx, ws, nil)
		if err != nil {
			fail(err)
		}
		applyEffect(model, eff)
		report(crashLine{Kind: "ack", Rev: c.Rev, CID: c.CID.String(), Data: c.Data.String()})
	}
	os.Exit(0)
}

func readRecordIndex(db *bolt.DB) (map[string]string, error) {
	out := map[string]string{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			_, c, err := cid.CidFromBytes(v)
			out[string(k)] = c.String()
			return err
		})
	})
	return out, err
}

func applyEffect(model, eff map[string]string) {
	for p, c := range eff {
		if c == "" {
			delete(model, p)
		} else {
			model[p] = c
		}
	}
}

func cloneState(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sameState(a, b map[string]string) string {
	for k, v := range a {
		if b[k] != v {
			return fmt.Sprintf("%s: %q, want %q", k, b[k], v)
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			return fmt.Sprintf("%s: %q, want none", k, v)
		}
	}
	return ""
}

// TestCrashKill9 kills the helper at a few random points of a write stream,
// on the same file, checking the reopened repository after each kill.
func TestCrashKill9(t *testing.T) {
	if os.Getenv(crashEnvDB) != "" {
		t.Skip("in the helper process")
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	path := filepath.Join(t.TempDir(), "crash.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	acked := map[string]string{} // records as of the last acknowledged commit
	commits := 1                 // commits with an event: the helper's Init, the acked ones, the unacked heads
	start := time.Now()
	for run := range 6 {
		target := 20 + rng.IntN(150)
		lastAck, pending, acks := crashRun(t, path, key, uint64(run)+rng.Uint64()%1000, target, rng.IntN(3000), acked)
		commits += acks

		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(db, testDID, key, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkIntegrity(t, db)
		var h *head
		events := map[string]string{}
		err = db.View(func(tx *bolt.Tx) error {
			h, err = readHead(tx)
			if b := tx.Bucket([]byte(crashEvents)); b != nil {
				_ = b.ForEach(func(k, v []byte) error {
					_, c, err := cid.CidFromBytes(v)
					events[string(k)] = c.String()
					return err
				})
			}
			return err
		})
		if err != nil || h == nil {
			t.Fatalf("head after the kill: %v, %v", h, err)
		}
		stored, err := readRecordIndex(db)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.rev < lastAck.Rev:
			t.Fatalf("run %d: head %s is before the acknowledged %s", run, h.rev, lastAck.Rev)
		case h.rev == lastAck.Rev:
			if h.commit.String() != lastAck.CID || h.data.String() != lastAck.Data {
				t.Fatalf("run %d: head %s/%s, acknowledged %s/%s", run, h.commit, h.data, lastAck.CID, lastAck.Data)
			}
			if d := sameState(acked, stored); d != "" {
				t.Fatalf("run %d: records at the acknowledged head: %s", run, d)
			}
		default:
			// The pending batch committed but was not acknowledged: all of it.
			if pending == nil {
				t.Fatalf("run %d: head %s after the last ack %s, with nothing pending", run, h.rev, lastAck.Rev)
			}
			applyEffect(acked, pending)
			commits++
			if d := sameState(acked, stored); d != "" {
				t.Fatalf("run %d: records at the unacknowledged head: %s", run, d)
			}
		}
		// Never a commit without its event, and no event without a commit:
		// every event is of a commit that was acked or is the head.
		if events[h.rev] != h.commit.String() {
			t.Fatalf("run %d: head %s has event %q", run, h.rev, events[h.rev])
		}
		if events[lastAck.Rev] != lastAck.CID {
			t.Fatalf("run %d: acked %s has event %q", run, lastAck.Rev, events[lastAck.Rev])
		}
		if len(events) != commits {
			t.Fatalf("run %d: %d events for %d commits", run, len(events), commits)
		}
		t.Logf("run %d: killed after %d acks (head %s the last ack)", run, acks, map[bool]string{true: "is", false: "follows"}[h.rev == lastAck.Rev])

		// The repository takes the next write, which follows the head.
		c, err := r.Apply(context.Background(), []Write{create("app.bsky.feed.post", rkeyN(10000+run), post("after the crash"))}, &h.commit)
		if err != nil {
			t.Fatal(err)
		}
		verifyCommit(t, c, pub, &Commit{Rev: h.rev, Data: h.data})
		checkIntegrity(t, db)
		acked, err = readRecordIndex(db)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%v", time.Since(start))
}

// crashRun runs the helper on path until it has acknowledged target commits,
// waits delayMicros, kills it, and returns the last acknowledged commit, the
// effect of the batch pending after it (nil if none) and the number of acks
// (at least target: some may be read after the kill). It applies the
// acknowledged batches to state.
func crashRun(t *testing.T, path string, key atcrypto.PrivateKeyExportable, seed uint64, target, delayMicros int, state map[string]string) (crashLine, map[string]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashEnvDB+"="+path,
		crashEnvKey+"="+hex.EncodeToString(key.Bytes()),
		crashEnvSeed+"="+strconv.FormatUint(seed, 10),
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		last    crashLine
		pending map[string]string
		acks    int
		killed  bool
	)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), crashPrefix)
		if !ok {
			continue
		}
		var l crashLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("helper line %q: %v", line, err)
		}
		switch l.Kind {
		case "pending":
			pending = l.Writes
		case "ack":
			if pending == nil {
				t.Fatalf("ack %s without a pending batch", l.Rev)
			}
			if l.Rev <= last.Rev {
				t.Fatalf("ack %s after %s", l.Rev, last.Rev)
			}
			applyEffect(state, pending)
			pending, last = nil, l
			acks++
		}
		if acks == target && !killed {
			time.Sleep(time.Duration(delayMicros) * time.Microsecond)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
			// Keep reading: lines already written before the kill count.
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("helper ended after %d acks: %v, %v\n%s", acks, err, sc.Err(), stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("helper timed out after %d acks", acks)
	}
	return last, pending, acks
}
