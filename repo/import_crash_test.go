package repo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	bolt "go.etcd.io/bbolt"
)

// smallImportBatches makes every staging transaction of an import tiny, so
// that a test repository takes many of them.
func smallImportBatches(t *testing.T) {
	b, k := importBatchBytes, importBatchKeys
	importBatchBytes, importBatchKeys = 2<<10, 40
	t.Cleanup(func() { importBatchBytes, importBatchKeys = b, k })
}

// checkBolt runs bbolt's own consistency check: every page reachable once
// or free, none leaked (the import moves and deletes whole buckets).
func checkBolt(t testing.TB, db *bolt.DB) {
	t.Helper()
	if err := db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained: the checker reads tx until it closes the channel
			if first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}

func setImportHook(t *testing.T, h func(step int, final bool) error) {
	testImportHook = h
	t.Cleanup(func() { testImportHook = nil })
}

func hasStagedImport(t testing.TB, db *bolt.DB) bool {
	t.Helper()
	var ok bool
	if err := db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketImport) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestImportStaged: an import writes in many transactions, and at every one
// of them readers (head, records, the exported CAR) see exactly the old
// repository; then, at once, exactly the new one.
func TestImportStaged(t *testing.T) {
	smallImportBatches(t)
	ctx := context.Background()
	src := newTestRepo(t, Options{})
	impFill(t, src, 300)
	srcState := impStateOf(t, src)

	dst := newTestRepoKey(t, testDID, src.key, Options{})
	impFill(t, dst, 20)
	before := impStateOf(t, dst)
	steps := 0
	setImportHook(t, func(step int, _ bool) error {
		steps = step
		if !hasStagedImport(t, dst.db) {
			t.Fatalf("step %d: no staging area", step)
		}
		impAssertSame(t, before, impStateOf(t, dst))
		return nil
	})
	c, err := dst.ImportCAR(ctx, bytes.NewReader(srcState.export), impPub(t, src.key), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if steps < 10 {
		t.Fatalf("the import took %d staging transactions; the test wants many", steps)
	}
	if hasStagedImport(t, dst.db) {
		t.Fatal("staging area left after the import")
	}
	got := impStateOf(t, dst)
	impAssertSameRecords(t, srcState, got)
	if got.head != c.CID || got.rev != c.Rev {
		t.Fatalf("head %s %s, want %s %s", got.head, got.rev, c.CID, c.Rev)
	}
	checkIntegrity(t, dst.db)
	checkBolt(t, dst.db)
	t.Logf("%d staging transactions", steps)
}

// TestImportAbort: an import that fails at any of its staging transactions,
// or whose context is canceled there, or whose BeforeCommit refuses the
// switch, leaves the database exactly as it was (every bucket, every key).
func TestImportAbort(t *testing.T) {
	smallImportBatches(t)
	src := newTestRepo(t, Options{})
	impFill(t, src, 120)
	car := impExport(t, src)
	pub := impPub(t, src.key)

	refuse := false
	boom := errors.New("boom")
	dst := newTestRepoKey(t, testDID, src.key, Options{BeforeCommit: func(*bolt.Tx, *Commit) error {
		if refuse {
			return boom
		}
		return nil
	}})
	impFill(t, dst, 20)
	before := impStateOf(t, dst)
	snap := snapshotDB(t, dst.db)

	// How many staging transactions a full import takes (into a twin).
	twin := newTestRepoKey(t, testDID, src.key, Options{})
	total := 0
	setImportHook(t, func(step int, _ bool) error { total = step; return nil })
	if _, err := twin.ImportCAR(context.Background(), bytes.NewReader(car), pub, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if total < 4 {
		t.Fatalf("%d staging transactions", total)
	}

	check := func(t *testing.T, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
		if hasStagedImport(t, dst.db) {
			t.Fatal("staging area left behind")
		}
		impAssertSame(t, before, impStateOf(t, dst))
		assertSnapshot(t, dst.db, snap)
		checkIntegrity(t, dst.db)
		checkBolt(t, dst.db)
	}
	// at is a step number, or -1 for the last staging transaction (the
	// count varies by one with where the new commit sorts).
	at := func(want, step int, final bool) bool { return step == want || (want < 0 && final) }
	for _, stop := range []int{1, total / 2, -1} {
		t.Run(fmt.Sprintf("error at step %d of about %d", stop, total), func(t *testing.T) {
			setImportHook(t, func(step int, final bool) error {
				if at(stop, step, final) {
					return boom
				}
				return nil
			})
			_, err := dst.ImportCAR(context.Background(), bytes.NewReader(car), pub, ImportOptions{})
			check(t, err, boom)
		})
		t.Run(fmt.Sprintf("canceled at step %d of about %d", stop, total), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			setImportHook(t, func(step int, final bool) error {
				if at(stop, step, final) {
					cancel()
				}
				return nil
			})
			_, err := dst.ImportCAR(ctx, bytes.NewReader(car), pub, ImportOptions{})
			check(t, err, context.Canceled)
		})
	}
	t.Run("BeforeCommit refuses the switch", func(t *testing.T) {
		setImportHook(t, nil)
		refuse = true
		defer func() { refuse = false }()
		_, err := dst.ImportCAR(context.Background(), bytes.NewReader(car), pub, ImportOptions{})
		check(t, err, boom)
	})
	t.Run("then an import succeeds", func(t *testing.T) {
		setImportHook(t, nil)
		if _, err := dst.ImportCAR(context.Background(), bytes.NewReader(car), pub, ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		impCheckFullExport(t, dst, pub)
		checkIntegrity(t, dst.db)
		checkBolt(t, dst.db)
	})
}

// The kill -9 test of imports: a helper process (this test binary) imports
// a CAR with tiny staging transactions, reports each one ("STEP n") and the
// end ("DONE rev"), and stops to wait for the kill at a chosen step.

const importCrashEnv = "PDS_IMPORT_CRASH_HELPER"

type importCrashConfig struct {
	DB, CAR string
	Key     string // the target's signing key, hex
	Pub     string // the source's signing key, hex (its public half verifies the CAR)
	Stop    int    // the step to wait at (-1: the last one; 0: wait after DONE)
}

// TestImportCrashHelper is the helper process; it does nothing in a normal
// run.
func TestImportCrashHelper(t *testing.T) {
	env := os.Getenv(importCrashEnv)
	if env == "" {
		t.Skip("helper process for TestImportKill9")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "import crash helper:", err)
		os.Exit(2)
	}
	var cfg importCrashConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		fail(err)
	}
	key, err := parseHexKey(cfg.Key)
	if err != nil {
		fail(err)
	}
	srcKey, err := parseHexKey(cfg.Pub)
	if err != nil {
		fail(err)
	}
	pub, err := srcKey.PublicKey()
	if err != nil {
		fail(err)
	}
	importBatchBytes, importBatchKeys = 2<<10, 40
	wait := func() {
		time.Sleep(time.Minute) // the parent kills us first
		os.Exit(3)
	}
	testImportHook = func(step int, final bool) error {
		fmt.Printf("STEP %d\n", step)
		if step == cfg.Stop || (cfg.Stop < 0 && final) {
			fmt.Println("STOPPED")
			wait()
		}
		return nil
	}
	db, err := bolt.Open(cfg.DB, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		fail(err)
	}
	r, err := Open(db, testDID, key, Options{})
	if err != nil {
		fail(err)
	}
	car, err := os.Open(cfg.CAR)
	if err != nil {
		fail(err)
	}
	c, err := r.ImportCAR(context.Background(), bufio.NewReader(car), pub, ImportOptions{})
	if err != nil {
		fail(err)
	}
	fmt.Printf("DONE %s\n", c.Rev)
	wait()
}

func parseHexKey(s string) (*atcrypto.PrivateKeyK256, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, err
	}
	return atcrypto.ParsePrivateBytesK256(b)
}

// TestImportKill9: a process killed at the first, a middle or the last
// staging transaction of an import leaves a staging area that the next Open
// discards, and the repository is exactly the one from before the import
// (here an account migrating in: its empty first commit and a few records);
// killed right after the import returned, the new repository is all there.
func TestImportKill9(t *testing.T) {
	if os.Getenv(importCrashEnv) != "" {
		t.Skip("in the helper process")
	}
	smallImportBatches(t)
	src := newTestRepo(t, Options{})
	impFill(t, src, 200)
	srcState := impStateOf(t, src)
	dir := t.TempDir()
	carPath := filepath.Join(dir, "repo.car")
	if err := os.WriteFile(carPath, srcState.export, 0o600); err != nil {
		t.Fatal(err)
	}

	// The steps of a full import (into a scratch twin).
	total := 0
	setImportHook(t, func(step int, _ bool) error { total = step; return nil })
	twin := newTestRepoKey(t, testDID, src.key, Options{})
	if _, err := twin.ImportCAR(context.Background(), bytes.NewReader(srcState.export), impPub(t, src.key), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	setImportHook(t, nil)

	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pds.db")
	open := func() *testRepo {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(db, testDID, key, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return &testRepo{Repo: r, db: db, path: path, key: key}
	}
	dst := open()
	if _, err := dst.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, dst, create("app.bsky.feed.post", "own1", post("own 1")), create("app.bsky.actor.profile", "self", map[string]any{"$type": "app.bsky.actor.profile"}))
	before := impStateOf(t, dst)
	dst.db.Close()

	cfg := importCrashConfig{DB: path, CAR: carPath, Key: hex.EncodeToString(key.Bytes()), Pub: hex.EncodeToString(src.key.Bytes())}
	for _, stop := range []int{1, total / 2, -1, 0} {
		cfg.Stop = stop
		rev := importCrashRun(t, cfg)

		// Before Open: the staging area is there exactly when the kill
		// came in the middle of the import.
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if staged := hasStagedImport(t, db); staged != (stop != 0) {
			t.Fatalf("stop %d: staging area present: %v", stop, staged)
		}
		db.Close()
		dst = open()
		if hasStagedImport(t, dst.db) {
			t.Fatalf("stop %d: Open kept the staging area", stop)
		}
		checkIntegrity(t, dst.db)
		checkBolt(t, dst.db)
		got := impStateOf(t, dst)
		if stop != 0 {
			impAssertSame(t, before, got)
		} else {
			impAssertSameRecords(t, srcState, got)
			if got.rev != rev {
				t.Fatalf("head rev %s, the import returned %s", got.rev, rev)
			}
		}
		t.Logf("killed at step %d of %d: %d records, rev %s", stop, total, len(got.records), got.rev)
		dst.db.Close()
	}
}

// importCrashRun runs the helper until it reports cfg.Stop (or DONE), kills
// it with SIGKILL, and returns the rev it reported DONE with, if any.
func importCrashRun(t *testing.T, cfg importCrashConfig) string {
	t.Helper()
	env, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestImportCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), importCrashEnv+"="+string(env))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := "STOPPED"
	rev := ""
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		done, isDone := strings.CutPrefix(line, "DONE ")
		if line == want || (cfg.Stop == 0 && isDone) {
			rev = done
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper ended before %q: %v\n%s", want, sc.Err(), stderr.String())
	}
	return rev
}
