//go:build hostile

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// seedRepo writes batches×10 records of about size bytes each, so that
// exports and replays are far larger than socket buffers.
func seedRepo(t testing.TB, s *hostileServer, batches, size int) {
	t.Helper()
	c := clientFrom(ownerAddr)
	text := strings.Repeat("x", size)
	for b := 0; b < batches; b++ {
		var writes []map[string]any
		for i := 0; i < 10; i++ {
			// Distinct contents: equal records share one block.
			writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.hostile",
				"value": map[string]any{"$type": "com.example.hostile", "text": fmt.Sprintf("%d-%d-%s", b, i, text), "createdAt": "2026-12-05T00:00:00Z"}})
		}
		st, out := hpost(t, c, s, "com.atproto.repo.applyWrites", s.access, "", map[string]any{"repo": s.did, "writes": writes})
		if st != 200 {
			t.Fatalf("seed applyWrites: %d %v", st, out)
		}
	}
}

// stalledConn opens a raw connection from src with a tiny receive buffer
// and sends req; it never reads.
func stalledConn(src, host, req string) (net.Conn, error) {
	c, err := dialerFrom(src).Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// closeAll closes every connection.
func closeAll[C io.Closer](cs []C) {
	for _, c := range cs {
		c.Close()
	}
}

// attackStalledGetRepo: readers that request getRepo and never read,
// while the repository keeps growing (so bbolt must grow its mapping, which
// waited for every open read transaction).
var attackStalledGetRepo = attack{
	name: "stalled getRepo readers",
	// Twelve megabytes: more than the socket buffers of a stalled reader
	// absorb (up to 4 MB on Linux), so the export really waits.
	setup: func(t testing.TB, s *hostileServer) { seedRepo(t, s, 60, 20_000) },
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		req := "GET /xrpc/com.atproto.sync.getRepo?did=" + s.did + " HTTP/1.1\r\nHost: localhost\r\n\r\n"
		var conns []net.Conn
		for i := 0; i < 40; i++ {
			c, err := stalledConn(attackerAddr(i/10), s.host, req)
			if err != nil {
				t.Errorf("attacker dial: %v", err)
				continue
			}
			conns = append(conns, c)
		}
		defer closeAll(conns)
		// Grow the database meanwhile (900 KB a batch, tens of MB in all),
		// so that bbolt must grow its mapping: that waited for every open
		// read transaction, and every reader queued behind it.
		c := clientFrom(ownerAddr)
		text := strings.Repeat("g", 100_000)
		for i := 0; ctx.Err() == nil; i++ {
			var writes []map[string]any
			for j := 0; j < 9; j++ {
				writes = append(writes, map[string]any{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.hostile",
					"value": map[string]any{"$type": "com.example.hostile", "text": fmt.Sprintf("%d-%d-%s", i, j, text), "createdAt": "2026-12-05T00:00:00Z"}})
			}
			st, out, err := hcall(c, s, "POST", "com.atproto.repo.applyWrites", "", s.access, "", map[string]any{"repo": s.did, "writes": writes})
			if err != nil || st != 200 {
				t.Errorf("growing write %d: %d %v %v", i, st, out, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	},
}

// dialWS opens a firehose websocket from src; the socket's receive buffer
// is shrunk so that a consumer that never reads stalls the server soon.
func dialWS(ctx context.Context, src, host, query string) (*websocket.Conn, int, error) {
	d := websocket.Dialer{NetDialContext: dialerFrom(src).DialContext, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(ctx, "ws://"+host+"/xrpc/com.atproto.sync.subscribeRepos"+query, nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	if err != nil {
		return nil, status, err
	}
	if tc, ok := conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	return conn, status, nil
}

// attackFirehoseReplay: 1,000 consumers at cursor=0 that never read, from
// 63 addresses (16 each, the per-address cap).
var attackFirehoseReplay = attack{
	name:  "firehose replay, 1000 stalled consumers",
	setup: func(t testing.TB, s *hostileServer) { seedRepo(t, s, 40, 20_000) },
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		var mu sync.Mutex
		var conns []*websocket.Conn
		var wg sync.WaitGroup
		var refused atomic.Int64
		for a := 0; a < 63; a++ {
			wg.Add(1)
			go func(a int) {
				defer wg.Done()
				for i := 0; i < 16 && a*16+i < 1000; i++ {
					conn, _, err := dialWS(ctx, attackerAddr(a), s.host, "?cursor=0")
					if err != nil {
						refused.Add(1)
						continue
					}
					mu.Lock()
					conns = append(conns, conn)
					mu.Unlock()
				}
			}(a)
		}
		wg.Wait()
		t.Logf("firehose replay: %d stalled consumers connected, %d refused", len(conns), refused.Load())
		if len(conns) < 900 {
			t.Errorf("only %d of 1000 consumers connected: the attack did not happen", len(conns))
		}
		<-ctx.Done()
		closeAll(conns)
	},
}

// attackGetBlocks: one large block named 1,000 times, five clients at once,
// in a loop.
var attackGetBlocks = attack{
	name: "getBlocks amplification",
	setup: func(t testing.TB, s *hostileServer) {
		st, out := hpost(t, clientFrom(ownerAddr), s, "com.atproto.repo.createRecord", s.access, "", map[string]any{
			"repo": s.did, "collection": "com.example.hostile", "rkey": "big",
			"record": map[string]any{"$type": "com.example.hostile", "text": strings.Repeat("b", 860_000), "createdAt": "2026-12-05T00:00:00Z"},
		})
		if st != 200 {
			t.Fatalf("big record: %d %v", st, out)
		}
		bigCID = out["cid"].(string)
	},
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		q := url.Values{"did": {s.did}}
		for range 1000 {
			q.Add("cids", bigCID)
		}
		u := "http://" + s.host + "/xrpc/com.atproto.sync.getBlocks?" + q.Encode()
		t.Logf("getBlocks query: %d bytes", len(u))
		var wg sync.WaitGroup
		var requests, maxBody atomic.Int64
		for a := 0; a < 5; a++ {
			wg.Add(1)
			go func(a int) {
				defer wg.Done()
				c := clientFrom(attackerAddr(a))
				for ctx.Err() == nil {
					resp, err := c.Get(u)
					if err != nil {
						t.Errorf("getBlocks: %v", err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("getBlocks: status %d", resp.StatusCode)
						return
					}
					requests.Add(1)
					if n > maxBody.Load() {
						maxBody.Store(n)
					}
				}
			}(a)
		}
		wg.Wait()
		t.Logf("getBlocks: %d requests, largest answer %d bytes", requests.Load(), maxBody.Load())
		if maxBody.Load() > 1_000_000 {
			t.Errorf("an answer of %d bytes: the block was not deduplicated", maxBody.Load())
		}
	},
}

// bigCID is the CID of the getBlocks attack's large record (set in setup).
var bigCID string

// attackLogins: 200 parallel wrong logins from 50 addresses, in a loop;
// the owner logs in meanwhile from its own address.
var attackLogins = attack{
	name: "parallel wrong logins (scrypt)",
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		var wg sync.WaitGroup
		var byStatus sync.Map
		for g := 0; g < 200; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				c := clientFrom(attackerAddr(g % 50))
				for i := 0; ctx.Err() == nil; i++ {
					st, _, err := hcall(c, s, "POST", "com.atproto.server.createSession", "", "", "", map[string]any{"identifier": fmt.Sprintf("user%d.test", i%7), "password": "wrong"})
					if err != nil {
						continue
					}
					v, _ := byStatus.LoadOrStore(st, new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
				}
			}(g)
		}
		ownerLogins(ctx, t, s)
		wg.Wait()
		byStatus.Range(func(k, v any) bool {
			t.Logf("wrong logins answered %v: %d", k, v.(*atomic.Int64).Load())
			return true
		})
	},
}

// ownerLogins logs the owner in from its address every second until ctx
// ends; each must succeed.
func ownerLogins(ctx context.Context, t testing.TB, s *hostileServer) {
	c := clientFrom(ownerAddr)
	n := 0
	for ctx.Err() == nil {
		start := time.Now()
		st, out, err := hcall(c, s, "POST", "com.atproto.server.createSession", "", "", "", map[string]any{"identifier": "alice.test", "password": s.password})
		if err != nil || st != 200 {
			t.Errorf("owner login %d: %d %v %v after %v", n, st, out, err, time.Since(start))
		} else if d := time.Since(start); d > ownerP99Max {
			t.Errorf("owner login took %v", d)
		}
		n++
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if n == 0 {
		t.Error("the owner never logged in")
	}
}

// attackLockout: wrong logins for the owner's handle from 40 addresses (in
// every spelling that names it) until its identifier budget is spent; the
// owner still logs in from its own address.
var attackLockout = attack{
	name: "owner lockout by guessing",
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		spellings := []string{"alice.test", "ALICE.TEST", " alice.test ", "alice@example.com", s.did, "alice.teſt"}
		var wg sync.WaitGroup
		var limited atomic.Int64
		for a := 0; a < 40; a++ {
			wg.Add(1)
			go func(a int) {
				defer wg.Done()
				c := clientFrom(attackerAddr(a))
				for i := 0; i < 5; i++ {
					st, _, _ := hcall(c, s, "POST", "com.atproto.server.createSession", "", "", "", map[string]any{"identifier": spellings[(a+i)%len(spellings)], "password": fmt.Sprint("guess", a, i)})
					if st == 429 {
						limited.Add(1)
					}
				}
			}(a)
		}
		wg.Wait()
		if limited.Load() == 0 {
			t.Error("200 guesses at the owner's identifier were never limited")
		}
		// From a fresh address, any spelling is now limited: one bucket.
		st, _, _ := hcall(clientFrom(attackerAddr(100)), s, "POST", "com.atproto.server.createSession", "", "", "", map[string]any{"identifier": "Alice.Test", "password": "guess"})
		if st != 429 {
			t.Errorf("a new spelling from a new address got %d, not 429: the identifier bucket is split", st)
		}
		// The look-alike never logs in, even with the right password.
		st, _, _ = hcall(clientFrom(attackerAddr(101)), s, "POST", "com.atproto.server.createSession", "", "", "", map[string]any{"identifier": "alice.teſt", "password": s.password})
		if st == 200 {
			t.Error("alice.teſt logged in as alice.test")
		}
		ownerLogins(ctx, t, s)
	},
}

// attackSlowClients: trickling bodies and slowly growing headers from many
// connections, and one address opening far more than its share.
var attackSlowClients = attack{
	name: "slow bodies, huge headers, connection flood",
	dur:  12 * time.Second,
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		var mu sync.Mutex
		var conns []net.Conn
		keep := func(c net.Conn) {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		var wg sync.WaitGroup
		// 1,200 bodies announced as 1 MB, sent a byte a second.
		body := "POST /xrpc/com.atproto.repo.createRecord HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
		for a := 0; a < 20; a++ {
			for i := 0; i < 60; i++ {
				c, err := stalledConn(attackerAddr(a), s.host, body)
				if err != nil {
					continue
				}
				keep(c)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
				}()
			}
		}
		// 300 headers growing 8 KB every 200 ms toward a megabyte.
		for a := 20; a < 25; a++ {
			for i := 0; i < 60; i++ {
				c, err := stalledConn(attackerAddr(a), s.host, "GET /xrpc/_health HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
				if err != nil {
					continue
				}
				keep(c)
				wg.Add(1)
				go func() {
					defer wg.Done()
					pad := strings.Repeat("a", 8<<10)
					for sent := 0; ctx.Err() == nil && sent < 1<<20; sent += len(pad) {
						if _, err := io.WriteString(c, pad); err != nil {
							return
						}
						time.Sleep(200 * time.Millisecond)
					}
				}()
			}
		}
		// One address opens 300 connections: all but its cap are closed
		// at once.
		refused := 0
		for i := 0; i < 300; i++ {
			c, err := dialerFrom(attackerAddr(30)).Dial("tcp", s.host)
			if err != nil {
				refused++
				continue
			}
			keep(c)
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err == io.EOF {
				refused++
			}
		}
		t.Logf("slow clients: %d connections held; one address: %d of 300 refused", len(conns), refused)
		if refused < 300-connsPerAddr {
			t.Errorf("one address kept %d connections, cap %d", 300-refused, connsPerAddr)
		}
		<-ctx.Done()
		mu.Lock()
		closeAll(conns)
		mu.Unlock()
		wg.Wait()
	},
}

// attackFirehoseSlots: 1,024 idle sockets from one address; the relay
// still subscribes and receives the owner's commits.
var attackFirehoseSlots = attack{
	name: "firehose slots from one address",
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		var conns []*websocket.Conn
		upgraded, unavailable := 0, 0
		for i := 0; i < 1024; i++ {
			conn, st, err := dialWS(ctx, attackerAddr(0), s.host, "")
			switch {
			case err == nil:
				upgraded++
				conns = append(conns, conn)
			case st == http.StatusServiceUnavailable:
				unavailable++
			}
		}
		defer closeAll(conns)
		t.Logf("firehose slots: one address got %d sockets, %d answered 503, the rest refused at connect", upgraded, unavailable)
		if upgraded > 16 {
			t.Errorf("one address holds %d firehose sockets", upgraded)
		}
		relay, st, err := dialWS(ctx, relayAddr, s.host, "")
		if err != nil {
			t.Fatalf("the relay got no slot: %d %v", st, err)
		}
		defer relay.Close()
		_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := relay.ReadMessage(); err != nil {
			t.Errorf("the relay received nothing: %v", err)
		}
		<-ctx.Done()
	},
}

// attackAdmin: guessing the admin password on createAccount, with the
// right password among the guesses.
var attackAdmin = attack{
	name: "admin password guessing",
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		c := clientFrom(attackerAddr(0))
		type answer struct {
			st  int
			msg string
		}
		var answers []answer
		for i := 0; i < 30; i++ {
			pw := fmt.Sprint("guess-", i)
			if i == 5 {
				pw = hostileAdminPassword
			}
			st, out, err := hcall(c, s, "POST", "com.atproto.server.createAccount", "", "", basicAdmin(pw), map[string]any{"handle": "bob.test", "password": "bob-password"})
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, answer{st, fmt.Sprint(out["error"], ": ", out["message"])})
		}
		for i, a := range answers[:adminAttemptsHostile] {
			if a != answers[0] {
				t.Errorf("attempt %d answered %v, attempt 0 %v: the answer tells right from wrong", i, a, answers[0])
			}
		}
		for i, a := range answers[adminAttemptsHostile:] {
			if a.st != 429 {
				t.Errorf("attempt %d past the budget answered %v", adminAttemptsHostile+i, a)
			}
		}
		t.Logf("admin guesses: first %d answered %v, the rest 429", adminAttemptsHostile, answers[0])
		<-ctx.Done()
	},
}

// adminAttemptsHostile mirrors api's admin budget (10 per 5 minutes).
const adminAttemptsHostile = 10

// attackSmaller: the smaller findings, from a client holding the owner's
// token on another address: records nested 9,000 deep, a service token
// replayed, a ten-year service token asked for.
var attackSmaller = attack{
	name: "deep records, service-token replay and lifetime",
	run: func(ctx context.Context, t testing.TB, s *hostileServer) {
		c := clientFrom(attackerAddr(0))
		deep := `{"repo":"` + s.did + `","collection":"app.bsky.feed.post","record":{"$type":"app.bsky.feed.post","createdAt":"2026-12-05T00:00:00Z","text":"x","d":` +
			strings.Repeat(`{"a":`, 9000) + `1` + strings.Repeat(`}`, 9000) + `}}`
		for i := 0; ctx.Err() == nil; i++ {
			req, _ := http.NewRequest("POST", "http://"+s.host+"/xrpc/com.atproto.repo.createRecord", strings.NewReader(deep))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+s.access)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("record nested 9,000 deep: %d", resp.StatusCode)
			}
			// A ten-year service token is not granted.
			exp := time.Now().Add(10 * 365 * 24 * time.Hour).Unix()
			st, _, _ := hcall(c, s, "GET", "com.atproto.server.getServiceAuth", fmt.Sprintf("aud=did:web:localhost&lxm=com.atproto.repo.uploadBlob&exp=%d", exp), s.access, "", nil)
			if st != 400 {
				t.Fatalf("ten-year service token: %d", st)
			}
			// A service token for uploadBlob works once.
			st, out, _ := hcall(c, s, "GET", "com.atproto.server.getServiceAuth", "aud=did:web:localhost&lxm=com.atproto.repo.uploadBlob", s.access, "", nil)
			if st != 200 {
				t.Fatalf("getServiceAuth: %d %v", st, out)
			}
			tok := out["token"].(string)
			for use := 0; use < 2; use++ {
				req, _ := http.NewRequest("POST", "http://"+s.host+"/xrpc/com.atproto.repo.uploadBlob", strings.NewReader(fmt.Sprint("blob ", i)))
				req.Header.Set("Content-Type", "text/plain")
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if want := []int{200, 401}[use]; resp.StatusCode != want {
					t.Fatalf("service token use %d: %d, want %d", use+1, resp.StatusCode, want)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	},
}

// hostileAttacks are every scenario, in the order of the findings.
var hostileAttacks = []attack{
	attackStalledGetRepo,
	attackFirehoseReplay,
	attackGetBlocks,
	attackLogins,
	attackLockout,
	attackSlowClients,
	attackFirehoseSlots,
	attackAdmin,
	attackSmaller,
}

// TestHostile runs each attack against its own server process and checks
// the acceptance bounds of issue 9.
func TestHostile(t *testing.T) {
	for _, a := range hostileAttacks {
		t.Run(strings.ReplaceAll(a.name, " ", "_"), func(t *testing.T) {
			checkAcceptance(t, a.name, runAttack(t, a))
		})
	}
}

// BenchmarkHostile reports, per attack, the owner's p50/p99 latency and the
// server's peak private memory (one attack run per iteration).
func BenchmarkHostile(b *testing.B) {
	for _, a := range hostileAttacks {
		b.Run(strings.ReplaceAll(a.name, " ", "_"), func(b *testing.B) {
			var r attackResult
			for i := 0; i < b.N; i++ {
				r = runAttack(b, a)
			}
			b.ReportMetric(float64(r.ownerP50.Microseconds())/1000, "owner-p50-ms")
			b.ReportMetric(float64(r.ownerP99.Microseconds())/1000, "owner-p99-ms")
			b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak-rssanon-MiB")
			b.ReportMetric(float64(len(r.ownerFails)), "owner-failures")
			b.ReportMetric(r.recovery.Seconds(), "recovery-s")
		})
	}
}
