package testpds

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// FrameHeader is the header of an event-stream frame: op 1 is a message of
// type T, op -1 an error.
type FrameHeader struct {
	Op int64
	T  string
}

// DialFirehose opens subscribeRepos on the server from cursor (nil: live
// only); the connection is closed with the test.
func (s *Server) DialFirehose(tb testing.TB, cursor *int64) *websocket.Conn {
	tb.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		tb.Fatal(err)
	}
	addr := "ws://" + u.Host + "/xrpc/com.atproto.sync.subscribeRepos"
	if cursor != nil {
		addr += "?cursor=" + strconv.FormatInt(*cursor, 10)
	}
	conn, _, err := websocket.DefaultDialer.Dial(addr, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// ReadFrame reads one frame (waiting at most 10s) and splits it into its
// header and body bytes.
func ReadFrame(tb testing.TB, conn *websocket.Conn) (FrameHeader, []byte) {
	tb.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		tb.Fatalf("reading frame: %v", err)
	}
	h, body, err := SplitFrame(msg)
	if err != nil {
		tb.Fatal(err)
	}
	return h, body
}

// SplitFrame decodes a frame's CBOR header and returns it with the body.
func SplitFrame(msg []byte) (FrameHeader, []byte, error) {
	var h FrameHeader
	r := bytes.NewReader(msg)
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	if err != nil || maj != cbg.MajMap {
		return h, nil, fmt.Errorf("frame header: not a map (%v)", err)
	}
	for range n {
		k, err := cbg.ReadString(cr)
		if err != nil {
			return h, nil, fmt.Errorf("frame header key: %w", err)
		}
		switch k {
		case "op":
			maj, v, err := cr.ReadHeader()
			if err != nil {
				return h, nil, fmt.Errorf("frame op: %w", err)
			}
			h.Op = int64(v)
			if maj == cbg.MajNegativeInt {
				h.Op = -1 - int64(v)
			}
		case "t":
			if h.T, err = cbg.ReadString(cr); err != nil {
				return h, nil, fmt.Errorf("frame type: %w", err)
			}
		default:
			return h, nil, fmt.Errorf("frame header: unexpected key %q", k)
		}
	}
	return h, msg[len(msg)-r.Len():], nil
}
