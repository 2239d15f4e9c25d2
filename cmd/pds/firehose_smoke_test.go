package main

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	irepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/gorilla/websocket"
	"github.com/pdsbox/pds/internal/testpds"
)

func TestFirehoseSmoke(t *testing.T) {
	s := startServer(t, nil)
	did, access, _ := s.createAccount(t)
	for i := range 3 {
		st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post(strings.Repeat("x", i+1))})
		wantStatus(t, "createRecord", st, out, 200, "")
	}
	u, _ := url.Parse(s.URL)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := []string{"#identity", "#account", "#commit", "#sync", "#commit", "#commit", "#commit"}
	for i, typ := range want {
		h, body := testpds.ReadFrame(t, conn)
		if h.Op != 1 || h.T != typ {
			t.Fatalf("frame %d: %+v, want %s", i, h, typ)
		}
		if typ == "#commit" {
			var ev comatproto.SyncSubscribeRepos_Commit
			if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			if ev.Seq != int64(i+1) {
				t.Fatalf("seq %d, want %d", ev.Seq, i+1)
			}
			if _, err := irepo.VerifyCommitMessage(context.Background(), &ev); err != nil {
				t.Fatalf("commit %d: %v", i, err)
			}
		}
	}
	// Live: one more write arrives on the open socket.
	st, out := s.call(t, "POST", "com.atproto.repo.createRecord", access, "", map[string]any{"repo": did, "collection": "app.bsky.feed.post", "record": post("live")})
	wantStatus(t, "createRecord", st, out, 200, "")
	if h, _ := testpds.ReadFrame(t, conn); h.T != "#commit" {
		t.Fatalf("live frame %+v", h)
	}
	// A cursor in the future is an error frame.
	c2, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=999", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if h, body := testpds.ReadFrame(t, c2); h.Op != -1 || !bytes.Contains(body, []byte("FutureCursor")) {
		t.Fatalf("future cursor: %+v %q", h, body)
	}
}
