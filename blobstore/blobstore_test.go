package blobstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	bolt "go.etcd.io/bbolt"

	"github.com/pdsbox/pds/blobstore"
)

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	db    *bolt.DB
	store *blobstore.Store
	dir   string
	clock *clock
}

func newEnv(t *testing.T, cfg blobstore.Config) *env {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "pds.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	clk := &clock{now: time.Now()}
	cfg.Dir = filepath.Join(t.TempDir(), "blobdata")
	cfg.Now = clk.Now
	s, err := blobstore.New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, store: s, dir: cfg.Dir, clock: clk}
}

func rawCID(t *testing.T, data []byte) cid.Cid {
	t.Helper()
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) upload(t *testing.T, data []byte) *blobstore.Info {
	t.Helper()
	info, err := e.store.Upload(context.Background(), bytes.NewReader(data), "")
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	return info
}

func (e *env) files(t *testing.T, sub string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

func (e *env) metaKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	err := e.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("blobs")).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// assertEmpty checks that nothing was left behind by a failed upload.
func (e *env) assertEmpty(t *testing.T) {
	t.Helper()
	if f := e.files(t, "tmp"); len(f) != 0 {
		t.Errorf("tmp not empty: %v", f)
	}
	if f := e.files(t, "blobs"); len(f) != 0 {
		t.Errorf("blobs not empty: %v", f)
	}
	if k := e.metaKeys(t); len(k) != 0 {
		t.Errorf("metadata left: %v", k)
	}
}

func (e *env) refs(t *testing.T, c cid.Cid) int {
	t.Helper()
	info, err := e.store.Stat(context.Background(), c)
	if err != nil {
		t.Fatalf("Stat %s: %v", c, err)
	}
	return info.Refs
}

func (e *env) updateRefs(changes ...blobstore.RefChange) error {
	return e.db.Update(func(tx *bolt.Tx) error { return e.store.UpdateRefs(tx, changes) })
}

func TestNewCreatesLayout(t *testing.T) {
	e := newEnv(t, blobstore.Config{})
	for _, sub := range []string{"blobs", "tmp"} {
		fi, err := os.Stat(filepath.Join(e.dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s mode %o, want 700", sub, perm)
		}
	}
	err := e.db.View(func(tx *bolt.Tx) error {
		for _, b := range []string{"blobs", "blob_refs"} {
			if tx.Bucket([]byte(b)) == nil {
				return fmt.Errorf("bucket %s missing", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.store.MaxSize(); got != blobstore.DefaultMaxSize {
		t.Errorf("MaxSize = %d, want default %d", got, blobstore.DefaultMaxSize)
	}
}

func TestUploadRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, blobstore.Config{})
	data := randomBytes(t, 300_000)
	want := rawCID(t, data)

	info := e.upload(t, data)
	if !info.CID.Equals(want) {
		t.Fatalf("CID = %s, want %s", info.CID, want)
	}
	if info.CID.Prefix().Codec != cid.Raw || info.CID.Version() != 1 {
		t.Errorf("CID prefix %+v, want v1 raw", info.CID.Prefix())
	}
	if info.Size != int64(len(data)) || info.Refs != 0 || info.MimeType != "application/octet-stream" {
		t.Errorf("info = %+v", info)
	}
	if !info.CreatedAt.Equal(e.clock.Now()) {
		t.Errorf("CreatedAt = %v, want %v", info.CreatedAt, e.clock.Now())
	}

	st, err := e.store.Stat(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if *st != *info {
		t.Errorf("Stat = %+v, Upload = %+v", st, info)
	}

	rc, oi, err := e.store.Open(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if *oi != *info {
		t.Errorf("Open info = %+v", oi)
	}
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if _, err := rc.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(rc)
	if !bytes.Equal(tail, data[1000:]) {
		t.Error("seek then read differs")
	}

	if f := e.files(t, "blobs"); !slices.Equal(f, []string{want.String()}) {
		t.Errorf("blobs/ = %v", f)
	}
	if f := e.files(t, "tmp"); len(f) != 0 {
		t.Errorf("tmp/ = %v", f)
	}

	missing := rawCID(t, []byte("never uploaded"))
	if _, err := e.store.Stat(ctx, missing); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat missing: %v", err)
	}
	if _, _, err := e.store.Open(ctx, missing); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open missing: %v", err)
	}
}

func pad(b []byte) []byte { return append(b, bytes.Repeat([]byte{0}, 64)...) }

func ftyp(major string, compat ...string) []byte {
	size := 16 + 4*len(compat)
	b := []byte{0, 0, 0, byte(size)}
	b = append(b, "ftyp"+major+"\x00\x00\x02\x00"...)
	for _, c := range compat {
		b = append(b, c...)
	}
	return pad(b)
}

func TestUploadMimeType(t *testing.T) {
	tests := []struct {
		name     string
		data     []byte
		declared string
		want     string
	}{
		{"jpeg", pad([]byte("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00")), "", "image/jpeg"},
		{"png", pad([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")), "", "image/png"},
		{"gif", pad([]byte("GIF89a\x01\x00\x01\x00")), "", "image/gif"},
		{"webp", pad([]byte("RIFF\x24\x00\x00\x00WEBPVP8 ")), "", "image/webp"},
		{"mp4 isom+mp41", ftyp("isom", "isom", "mp41"), "", "video/mp4"},
		{"mp4 isom only", ftyp("isom", "isom", "iso2", "avc1"), "", "video/mp4"},
		{"mp4 mp42", ftyp("mp42", "mp42", "isom"), "", "video/mp4"},
		{"quicktime ftyp", ftyp("qt  ", "qt  "), "", "video/quicktime"},
		{"quicktime moov", pad([]byte("\x00\x00\x00\x6cmoov\x00\x00\x00\x6cmvhd")), "", "video/quicktime"},
		{"webm", pad([]byte("\x1A\x45\xDF\xA3\x9f\x42\x86\x81\x01")), "", "video/webm"},
		{"avif", ftyp("avif", "avif", "mif1", "miaf"), "", "image/avif"},
		{"heic", ftyp("heic", "mif1", "heic"), "", "image/heic"},
		{"mif1 avif", ftyp("mif1", "mif1", "avif"), "", "image/avif"},
		{"text", []byte("hello, world\n"), "", "text/plain; charset=utf-8"},
		{"text ignores declared", []byte("hello, world\n"), "image/png", "text/plain; charset=utf-8"},
		{"sniff beats declared", pad([]byte("\x89PNG\r\n\x1a\n")), "image/jpeg", "image/png"},
		{"binary no declared", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "", "application/octet-stream"},
		{"binary declared", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "application/x-custom", "application/x-custom"},
		{"binary declared with params", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "Audio/Ogg; Codecs=opus", "audio/ogg; codecs=opus"},
		{"binary declared wildcard", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "*/*", "application/octet-stream"},
		{"binary declared partial wildcard", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "image/*", "application/octet-stream"},
		{"binary declared malformed", []byte("\x00\x02\x03\x04\xfa\xfb\xfc"), "not a type", "application/octet-stream"},
		{"empty declared", []byte{}, "image/png", "image/png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, blobstore.Config{})
			info, err := e.store.Upload(context.Background(), bytes.NewReader(tt.data), tt.declared)
			if err != nil {
				t.Fatal(err)
			}
			if info.MimeType != tt.want {
				t.Errorf("MimeType = %q, want %q", info.MimeType, tt.want)
			}
		})
	}
}

// countingReader yields an endless stream of bytes and counts them.
type countingReader struct{ n int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.n + int64(i))
	}
	r.n += int64(len(p))
	return len(p), nil
}

func TestUploadTooLarge(t *testing.T) {
	const max = 10_000
	tests := []struct {
		name string
		size int
		ok   bool
	}{
		{"at limit", max, true},
		{"one over", max + 1, false},
		{"far over", 5 * max, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, blobstore.Config{MaxSize: max})
			info, err := e.store.Upload(context.Background(), bytes.NewReader(randomBytes(t, tt.size)), "")
			if tt.ok {
				if err != nil || info.Size != max {
					t.Fatalf("Upload = %+v, %v", info, err)
				}
				return
			}
			if !errors.Is(err, blobstore.ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			e.assertEmpty(t)
		})
	}

	t.Run("stops reading", func(t *testing.T) {
		e := newEnv(t, blobstore.Config{MaxSize: max})
		r := &countingReader{}
		_, err := e.store.Upload(context.Background(), io.LimitReader(r, 1<<30), "")
		if !errors.Is(err, blobstore.ErrTooLarge) {
			t.Fatalf("err = %v", err)
		}
		// io.Copy reads in 32 KiB chunks from the LimitReader(max+1), so the
		// source is read at most max+1 bytes.
		if r.n > max+1 {
			t.Errorf("read %d bytes, want at most %d", r.n, max+1)
		}
		e.assertEmpty(t)
	})
}

// failingReader returns n bytes, then calls hook (if any) and fails with err.
type failingReader struct {
	n    int
	err  error
	hook func()
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		if r.hook != nil {
			r.hook()
		}
		return 0, r.err
	}
	k := min(len(p), r.n, 100)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

func TestUploadFailureLeavesNothing(t *testing.T) {
	boom := errors.New("connection reset")
	t.Run("reader error", func(t *testing.T) {
		e := newEnv(t, blobstore.Config{})
		_, err := e.store.Upload(context.Background(), &failingReader{n: 5000, err: boom}, "")
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
		e.assertEmpty(t)
	})
	t.Run("context cancelled midway", func(t *testing.T) {
		e := newEnv(t, blobstore.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// After cancelling, the reader would go on forever: the store must
		// notice the cancellation itself.
		r := io.MultiReader(&failingReader{n: 5000, err: io.EOF, hook: cancel}, &countingReader{})
		_, err := e.store.Upload(ctx, r, "")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		e.assertEmpty(t)
	})
	t.Run("context cancelled before", func(t *testing.T) {
		e := newEnv(t, blobstore.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.store.Upload(ctx, strings.NewReader("data"), "")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		e.assertEmpty(t)
	})
}

func TestUploadIdempotent(t *testing.T) {
	e := newEnv(t, blobstore.Config{})
	data := randomBytes(t, 4096)
	first := e.upload(t, data)
	e.clock.Advance(10 * time.Minute)
	second, err := e.store.Upload(context.Background(), bytes.NewReader(data), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	if *first != *second {
		t.Errorf("re-upload = %+v, first = %+v", second, first)
	}
	if f := e.files(t, "blobs"); len(f) != 1 {
		t.Errorf("blobs/ = %v", f)
	}
	if f := e.files(t, "tmp"); len(f) != 0 {
		t.Errorf("tmp/ = %v", f)
	}
	if k := e.metaKeys(t); len(k) != 1 {
		t.Errorf("metadata = %v", k)
	}
}

func TestUpdateRefs(t *testing.T) {
	e := newEnv(t, blobstore.Config{})
	a := e.upload(t, []byte("blob a")).CID
	b := e.upload(t, []byte("blob b")).CID
	never := rawCID(t, []byte("never uploaded"))

	type want struct{ a, b int }
	steps := []struct {
		name    string
		changes []blobstore.RefChange
		wantErr error
		want    want
	}{
		{"create p1 with a twice", []blobstore.RefChange{{Path: "app.bsky.feed.post/1", Blobs: []cid.Cid{a, a}}}, nil, want{1, 0}},
		{"create p2 with a and b", []blobstore.RefChange{{Path: "app.bsky.feed.post/2", Blobs: []cid.Cid{a, b}}}, nil, want{2, 1}},
		{"update p1 to b", []blobstore.RefChange{{Path: "app.bsky.feed.post/1", Blobs: []cid.Cid{b}}}, nil, want{1, 2}},
		{"update p1 unchanged", []blobstore.RefChange{{Path: "app.bsky.feed.post/1", Blobs: []cid.Cid{b}}}, nil, want{1, 2}},
		{"delete p2", []blobstore.RefChange{{Path: "app.bsky.feed.post/2"}}, nil, want{0, 1}},
		{"delete p2 again", []blobstore.RefChange{{Path: "app.bsky.feed.post/2"}}, nil, want{0, 1}},
		{
			"unknown blob rolls back the batch",
			[]blobstore.RefChange{
				{Path: "app.bsky.feed.post/3", Blobs: []cid.Cid{a}},
				{Path: "app.bsky.feed.post/1"},
				{Path: "app.bsky.feed.post/4", Blobs: []cid.Cid{never}},
			},
			blobstore.ErrBlobNotFound, want{0, 1},
		},
		{
			"batch touching one path twice",
			[]blobstore.RefChange{
				{Path: "app.bsky.feed.post/5", Blobs: []cid.Cid{a}},
				{Path: "app.bsky.feed.post/5", Blobs: []cid.Cid{a, b}},
			},
			nil, want{1, 2},
		},
	}
	for _, st := range steps {
		err := e.updateRefs(st.changes...)
		if st.wantErr == nil && err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.wantErr != nil {
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.wantErr)
			}
			if !strings.Contains(err.Error(), never.String()) {
				t.Errorf("%s: error %q does not name the CID", st.name, err)
			}
		}
		if got := (want{e.refs(t, a), e.refs(t, b)}); got != st.want {
			t.Errorf("%s: refs = %+v, want %+v", st.name, got, st.want)
		}
	}
	// The failed batch wrote no index entries either.
	err := e.db.View(func(tx *bolt.Tx) error {
		for _, p := range []string{"app.bsky.feed.post/3", "app.bsky.feed.post/4"} {
			if v := tx.Bucket([]byte("blob_refs")).Get([]byte(p)); v != nil {
				return fmt.Errorf("index entry for %s survived the rollback", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	const grace = time.Hour
	e := newEnv(t, blobstore.Config{TempGrace: grace})
	kept := e.upload(t, []byte("referenced forever")).CID
	temp := e.upload(t, []byte("never referenced")).CID
	dropped := e.upload(t, []byte("referenced, then not")).CID
	if err := e.updateRefs(
		blobstore.RefChange{Path: "c/1", Blobs: []cid.Cid{kept}},
		blobstore.RefChange{Path: "c/2", Blobs: []cid.Cid{dropped}},
	); err != nil {
		t.Fatal(err)
	}

	// Stray files: an old and a fresh temp file, an old orphan in blobs/.
	realNow := time.Now()
	oldTmp := filepath.Join(e.dir, "tmp", "upload-old")
	freshTmp := filepath.Join(e.dir, "tmp", "upload-fresh")
	orphan := filepath.Join(e.dir, "blobs", rawCID(t, []byte("orphan")).String())
	for _, p := range []string{oldTmp, freshTmp, orphan} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{oldTmp, orphan} {
		if err := os.Chtimes(p, realNow.Add(-3*grace), realNow.Add(-3*grace)); err != nil {
			t.Fatal(err)
		}
	}

	exists := func(c cid.Cid) bool {
		_, err := e.store.Stat(ctx, c)
		_, ferr := os.Stat(filepath.Join(e.dir, "blobs", c.String()))
		if (err == nil) != (ferr == nil) {
			t.Errorf("%s: metadata err %v, file err %v", c, err, ferr)
		}
		return err == nil
	}
	gc := func(want int) {
		t.Helper()
		n, err := e.store.GC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("GC deleted %d, want %d", n, want)
		}
	}

	// Too young: only the old orphan file goes.
	e.clock.Advance(50 * time.Minute)
	gc(1)
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan survived: %v", err)
	}
	if _, err := os.Stat(oldTmp); !os.IsNotExist(err) {
		t.Errorf("old temp file survived: %v", err)
	}
	if _, err := os.Stat(freshTmp); err != nil {
		t.Errorf("fresh temp file: %v", err)
	}
	if !exists(kept) || !exists(temp) || !exists(dropped) {
		t.Fatal("a blob was deleted too early")
	}

	// The record with `dropped` goes at +50m; `temp` is now 61m old.
	if err := e.updateRefs(blobstore.RefChange{Path: "c/2"}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(11 * time.Minute)
	gc(1)
	if exists(temp) {
		t.Error("unreferenced old upload survived")
	}
	if !exists(kept) || !exists(dropped) {
		t.Error("kept or recently dropped blob deleted")
	}
	// A record can no longer reference the collected blob.
	if err := e.updateRefs(blobstore.RefChange{Path: "c/3", Blobs: []cid.Cid{temp}}); !errors.Is(err, blobstore.ErrBlobNotFound) {
		t.Errorf("reference to collected blob: %v", err)
	}

	e.clock.Advance(50 * time.Minute)
	gc(1)
	if exists(dropped) {
		t.Error("blob dropped 61m ago survived")
	}
	e.clock.Advance(100 * 24 * time.Hour)
	gc(0)
	if !exists(kept) {
		t.Error("referenced blob deleted")
	}

	// Re-uploading a collected blob brings it back.
	info := e.upload(t, []byte("never referenced"))
	if !info.CID.Equals(temp) || !exists(temp) {
		t.Error("re-upload after GC failed")
	}
}

func TestGCReuploadRestartsGrace(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, blobstore.Config{TempGrace: time.Hour})
	data := []byte("uploaded twice")
	e.upload(t, data)
	e.clock.Advance(50 * time.Minute)
	e.upload(t, data)
	e.clock.Advance(50 * time.Minute)
	if n, err := e.store.GC(ctx); err != nil || n != 0 {
		t.Fatalf("GC = %d, %v; want 0 (grace restarted by re-upload)", n, err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, blobstore.Config{})
	var referenced []string
	for i := range 7 {
		c := e.upload(t, fmt.Appendf(nil, "blob %d", i)).CID
		if i == 3 {
			continue // stays unreferenced
		}
		if err := e.updateRefs(blobstore.RefChange{Path: fmt.Sprintf("c/%d", i), Blobs: []cid.Cid{c}}); err != nil {
			t.Fatal(err)
		}
		referenced = append(referenced, c.String())
	}
	slices.Sort(referenced)

	for _, limit := range []int{1, 2, 3, 6, 7, 1000} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("too many pages")
				}
				cids, next, err := e.store.List(ctx, cursor, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(cids) > limit {
					t.Fatalf("page of %d > limit %d", len(cids), limit)
				}
				for _, c := range cids {
					got = append(got, c.String())
				}
				if next == "" {
					break
				}
				if next != cids[len(cids)-1].String() {
					t.Errorf("cursor %s is not the last CID of the page", next)
				}
				cursor = next
			}
			if !slices.Equal(got, referenced) {
				t.Errorf("listed %v\nwant %v", got, referenced)
			}
		})
	}

	// A cursor that is not a stored key starts after its position.
	cids, _, err := e.store.List(ctx, referenced[2]+"0", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(cids) != len(referenced)-3 || cids[0].String() != referenced[3] {
		t.Errorf("List after non-key cursor = %v", cids)
	}
}

// TestConcurrentUploadAndGC races uploads of the same bytes against GC runs
// that consider every unreferenced blob expired; afterwards metadata and
// files must agree.
func TestConcurrentUploadAndGC(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, blobstore.Config{TempGrace: time.Nanosecond})
	e.clock.Advance(time.Hour)
	data := randomBytes(t, 20_000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 {
				if w%2 == 0 {
					if _, err := e.store.Upload(ctx, bytes.NewReader(data), ""); err != nil {
						t.Error(err)
						return
					}
				} else if _, err := e.store.GC(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c := rawCID(t, data)
	_, serr := e.store.Stat(ctx, c)
	_, ferr := os.Stat(filepath.Join(e.dir, "blobs", c.String()))
	if (serr == nil) != (ferr == nil) {
		t.Fatalf("metadata err %v, file err %v", serr, ferr)
	}
}
