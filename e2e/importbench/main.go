// Command importbench measures com.atproto.repo.importRepo of one large
// repository on running servers, ours and the reference PDS, in the same
// run: the time of the request and the server's private memory (RssAnon,
// sampled from /proc/PID/status) while it imports.
//
// It makes a did:plc in the PLC directory both servers use (signing key K),
// builds a repository of -records records signed by K into a CAR (cached
// in -work with K and the DID's genesis operation, which is submitted again
// to a fresh directory), then on each server: createAccount with that DID
// and a service-auth token signed by K (the account starts deactivated, as
// a migration's does), importRepo of the CAR streamed from the file, and
// checkAccountStatus to see that every record is indexed. The servers run
// one after the other, never at the same time.
//
// e2e/import-bench.sh starts the servers and runs it; see e2e/README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

type server struct {
	name, url string
	pid       int
}

type result struct {
	server                   server
	dur                      time.Duration
	before, peak, after      int64
	indexed, blocks, samples int
	err                      error
}

func main() {
	var (
		records  = flag.Int("records", 100_000, "records in the repository")
		plcURL   = flag.String("plc", "http://localhost:2582", "the PLC directory both servers use")
		work     = flag.String("work", "/tmp/pds-e2e-import", "scratch folder (the CAR is cached here)")
		interval = flag.Duration("interval", 10*time.Millisecond, "RssAnon sampling interval")
	)
	var servers []server
	flag.Func("server", "name=URL=PID of a running server (repeat)", func(s string) error {
		parts := strings.SplitN(s, "=", 3)
		if len(parts) != 3 {
			return fmt.Errorf("want name=URL=PID")
		}
		pid, err := strconv.Atoi(parts[2])
		if err != nil {
			return err
		}
		servers = append(servers, server{name: parts[0], url: strings.TrimSuffix(parts[1], "/"), pid: pid})
		return nil
	})
	flag.Parse()
	if len(servers) == 0 {
		log.Fatal("no -server given")
	}
	ctx := context.Background()
	if err := os.MkdirAll(*work, 0o700); err != nil {
		log.Fatal(err)
	}
	id, err := identityFor(*work, *records)
	if err != nil {
		log.Fatal(err)
	}
	plc := &identity.PLCClient{URL: *plcURL}
	if err := plc.Submit(ctx, id.did, id.op); err != nil {
		log.Fatalf("submitting the DID to %s: %v", *plcURL, err)
	}
	carPath, err := buildCAR(ctx, *work, id, *records)
	if err != nil {
		log.Fatal(err)
	}
	st, err := os.Stat(carPath)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("CAR: %s, %d records, %.1f MB, DID %s", carPath, *records, float64(st.Size())/1e6, id.did)

	var results []result
	for _, s := range servers {
		r := importInto(ctx, s, id, carPath, st.Size(), *interval)
		if r.err != nil {
			log.Printf("%s: %v", s.name, r.err)
		}
		results = append(results, r)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\nimportRepo of %d records (%.1f MB CAR), %s, load average %s\n\n", *records, float64(st.Size())/1e6, time.Now().UTC().Format("2006-01-02 15:04 MST"), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Println("| server | import time | RssAnon before | peak RssAnon | RssAnon after | records indexed | blocks |")
	fmt.Println("|---|---|---|---|---|---|---|")
	failed := false
	for _, r := range results {
		if r.err != nil {
			failed = true
			fmt.Printf("| %s | failed: %v | | | | | |\n", r.server.name, r.err)
			continue
		}
		fmt.Printf("| %s | %.1f s | %.0f MiB | **%.0f MiB** | %.0f MiB | %d | %d |\n", r.server.name, r.dur.Seconds(),
			mib(r.before), mib(r.peak), mib(r.after), r.indexed, r.blocks)
	}
	fmt.Printf("\nRssAnon of the server process from /proc/PID/status every %s (%s samples).\n", *interval, sampleCounts(results))
	if failed {
		os.Exit(1)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sampleCounts(rs []result) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %d", r.server.name, r.samples))
	}
	return strings.Join(out, ", ")
}

// benchIdentity is the DID the CAR belongs to, kept with the CAR.
type benchIdentity struct {
	did syntax.DID
	key atcrypto.PrivateKeyExportable
	op  *didplc.RegularOp
}

type identityFile struct {
	DID string            `json:"did"`
	Key string            `json:"key"`
	Op  *didplc.RegularOp `json:"op"`
}

// identityFor loads the cached identity of a CAR of n records, or makes one.
func identityFor(work string, n int) (*benchIdentity, error) {
	path := filepath.Join(work, fmt.Sprintf("import-%d.identity.json", n))
	if b, err := os.ReadFile(path); err == nil {
		var f identityFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		kb, err := hex.DecodeString(f.Key)
		if err != nil {
			return nil, err
		}
		key, err := atcrypto.ParsePrivateBytesK256(kb)
		if err != nil {
			return nil, err
		}
		return &benchIdentity{did: syntax.DID(f.DID), key: key, op: f.Op}, nil
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	rot, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	did, op, err := identity.PLCGenesis(rot, pub, "import-bench.test", "https://import-bench.invalid")
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(identityFile{DID: did.String(), Key: hex.EncodeToString(key.Bytes()), Op: op})
	if err != nil {
		return nil, err
	}
	// A new identity invalidates any CAR cached for the old one.
	_ = os.Remove(carFile(work, n))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	return &benchIdentity{did: did, key: key, op: op}, nil
}

func carFile(work string, n int) string {
	return filepath.Join(work, fmt.Sprintf("import-%d.car", n))
}

// buildCAR writes the repository (a deterministic mix of posts, likes and
// follows with increasing TID keys, as a client writes them over time) with
// our repo package, in commits of 200 writes, and exports it as a CAR.
func buildCAR(ctx context.Context, work string, id *benchIdentity, n int) (string, error) {
	out := carFile(work, n)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	start := time.Now()
	dbPath := filepath.Join(work, "import-build.db")
	_ = os.Remove(dbPath)
	defer os.Remove(dbPath)
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return "", err
	}
	defer db.Close()
	r, err := repo.Open(db, id.did, id.key, repo.Options{})
	if err != nil {
		return "", err
	}
	rng := rand.New(rand.NewPCG(uint64(n), 12))
	t := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	for done := 0; done < n; {
		var ws []repo.Write
		for ; len(ws) < repo.MaxWrites && done < n; done++ {
			t = t.Add(time.Duration(1+rng.IntN(600)) * time.Second)
			ws = append(ws, record(rng, t))
		}
		if _, err := r.Apply(ctx, ws, nil); err != nil {
			return "", fmt.Errorf("building the repository: %w", err)
		}
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := r.ExportCAR(ctx, bw); err != nil {
		f.Close()
		return "", err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	log.Printf("built the repository of %d records in %s", n, time.Since(start).Round(time.Second))
	return out, os.Rename(tmp, out)
}

var words = strings.Fields(`the a of to and in is it you that he was for on are with as I his they be at one
have this from or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her long make thing see
atproto bluesky federation relay appview firehose feed post skeet repo`)

func record(rng *rand.Rand, t time.Time) repo.Write {
	rkey := syntax.RecordKey(syntax.NewTID(t.UnixMicro(), 0).String())
	at := t.Format("2006-01-02T15:04:05.000Z")
	did := func() string {
		const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
		b := make([]byte, 24)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return "did:plc:" + string(b)
	}
	switch k := rng.IntN(10); {
	case k < 7:
		var sb strings.Builder
		for n := 60 + rng.IntN(220); sb.Len() < n; {
			if sb.Len() > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[rng.IntN(len(words))])
		}
		return repo.Write{Action: repo.ActionCreate, Collection: "app.bsky.feed.post", RKey: rkey,
			Record: map[string]any{"$type": "app.bsky.feed.post", "text": sb.String(), "createdAt": at, "langs": []any{"en"}}}
	case k < 9:
		return repo.Write{Action: repo.ActionCreate, Collection: "app.bsky.feed.like", RKey: rkey,
			Record: map[string]any{"$type": "app.bsky.feed.like", "createdAt": at, "subject": map[string]any{
				"uri": "at://" + did() + "/app.bsky.feed.post/" + syntax.NewTID(t.UnixMicro()-int64(rng.IntN(1e9)), 1).String(),
				"cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}}
	default:
		return repo.Write{Action: repo.ActionCreate, Collection: "app.bsky.graph.follow", RKey: rkey,
			Record: map[string]any{"$type": "app.bsky.graph.follow", "createdAt": at, "subject": did()}}
	}
}

// importInto creates the account on s and imports the CAR, sampling the
// server's RssAnon meanwhile.
func importInto(ctx context.Context, s server, id *benchIdentity, carPath string, size int64, interval time.Duration) (res result) {
	res.server = s
	cl := &http.Client{Timeout: 15 * time.Minute}
	var desc struct {
		DID string `json:"did"`
	}
	if err := call(ctx, cl, http.MethodGet, s.url+"/xrpc/com.atproto.server.describeServer", "", nil, "", &desc); err != nil {
		res.err = err
		return res
	}
	tok, err := auth.SignServiceJWT(id.key, id.did, desc.DID, "com.atproto.server.createAccount", 5*time.Minute, time.Now())
	if err != nil {
		res.err = err
		return res
	}
	handle := fmt.Sprintf("imp%d.test", time.Now().UnixNano()%1e9)
	body, _ := json.Marshal(map[string]string{"did": id.did.String(), "handle": handle, "email": handle + "@example.com", "password": "import-bench-password"})
	var sess struct {
		AccessJwt string `json:"accessJwt"`
	}
	if err := call(ctx, cl, http.MethodPost, s.url+"/xrpc/com.atproto.server.createAccount", tok, bytes.NewReader(body), "application/json", &sess); err != nil {
		res.err = fmt.Errorf("createAccount: %w", err)
		return res
	}
	f, err := os.Open(carPath)
	if err != nil {
		res.err = err
		return res
	}
	defer f.Close()

	res.before = rssAnon(s.pid)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			res.peak = max(res.peak, rssAnon(s.pid))
			res.samples++
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/xrpc/com.atproto.repo.importRepo", f)
	if err == nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/vnd.ipld.car")
		req.Header.Set("Authorization", "Bearer "+sess.AccessJwt)
		err = do(cl, req, nil)
	}
	res.dur = time.Since(start)
	close(stop)
	wg.Wait()
	res.peak = max(res.peak, rssAnon(s.pid))
	if err != nil {
		res.err = fmt.Errorf("importRepo: %w", err)
		return res
	}
	var cs struct {
		IndexedRecords int `json:"indexedRecords"`
		RepoBlocks     int `json:"repoBlocks"`
	}
	if err := call(ctx, cl, http.MethodGet, s.url+"/xrpc/com.atproto.server.checkAccountStatus", sess.AccessJwt, nil, "", &cs); err != nil {
		res.err = fmt.Errorf("checkAccountStatus: %w", err)
		return res
	}
	res.indexed, res.blocks = cs.IndexedRecords, cs.RepoBlocks
	res.after = rssAnon(s.pid)
	return res
}

func call(ctx context.Context, cl *http.Client, method, url, bearer string, body io.Reader, ctype string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return do(cl, req, out)
}

func do(cl *http.Client, req *http.Request, out any) error {
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", req.URL.Path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// rssAnon is a process's resident anonymous memory in bytes (0 if gone).
func rssAnon(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
