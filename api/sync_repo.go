package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/gorilla/websocket"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/repo"
)

// syncRepo is the account's repository if did names it.
func (s *server) syncRepo(did string) (*repo.Repo, error) {
	if _, err := syntax.ParseDID(did); err != nil {
		return nil, invalidRequest("Invalid did: %v", err)
	}
	rp, err := s.accounts.Repo()
	if err != nil || rp.DID().String() != did {
		return nil, xerr(http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: %s", did)
	}
	if err := s.repoTakendown(context.Background(), did); err != nil {
		return nil, err
	}
	return rp, nil
}

const carContentType = "application/vnd.ipld.car"

type getRepoParams struct {
	DID   string `query:"did"`
	Since string `query:"since"`
}

func (s *server) getRepo(w http.ResponseWriter, r *http.Request, p *getRepoParams) error {
	rp, err := s.syncRepo(p.DID)
	if err != nil {
		return err
	}
	if p.Since != "" {
		if _, err := syntax.ParseTID(p.Since); err != nil {
			return invalidRequest("Invalid since: %v", err)
		}
	}
	return s.writeExport(w, r, rp, p.Since)
}

// writeExport answers with the CAR of the head commit (or of the blocks
// after since). The CAR is spooled first, so a slow client holds no
// database transaction, and its length is known.
func (s *server) writeExport(w http.ResponseWriter, r *http.Request, rp *repo.Repo, since string) error {
	exp, err := rp.OpenExport(r.Context(), since)
	if err != nil {
		return err
	}
	defer exp.Close()
	w.Header().Set("Content-Type", carContentType)
	w.Header().Set("Content-Length", strconv.FormatInt(exp.Size(), 10))
	// Once streaming has begun an error can only cut the body short.
	if _, err := io.Copy(w, exp.Reader()); err != nil && r.Context().Err() == nil {
		s.log.Debug("export cut short", "err", err)
	}
	return nil
}

// didParams are the parameters of the sync methods that name only the
// repository.
type didParams struct {
	DID string `query:"did"`
}

// getCheckout is the deprecated full-repository export.
func (s *server) getCheckout(w http.ResponseWriter, r *http.Request, p *didParams) error {
	rp, err := s.syncRepo(p.DID)
	if err != nil {
		return err
	}
	return s.writeExport(w, r, rp, "")
}

type getLatestCommitOutput struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

func (s *server) getLatestCommit(_ context.Context, p *didParams) (*getLatestCommitOutput, error) {
	rp, err := s.syncRepo(p.DID)
	if err != nil {
		return nil, err
	}
	c, rev, err := rp.Head()
	if err != nil {
		return nil, err
	}
	return &getLatestCommitOutput{CID: c.String(), Rev: rev}, nil
}

type getHeadOutput struct {
	Root string `json:"root"`
}

// getHead is the deprecated form of getLatestCommit.
func (s *server) getHead(ctx context.Context, p *didParams) (*getHeadOutput, error) {
	latest, err := s.getLatestCommit(ctx, p)
	if err != nil {
		return nil, err
	}
	return &getHeadOutput{Root: latest.CID}, nil
}

type syncGetRecordParams struct {
	DID        string `query:"did"`
	Collection string `query:"collection"`
	RKey       string `query:"rkey"`
}

func (s *server) syncGetRecord(w http.ResponseWriter, _ *http.Request, p *syncGetRecordParams) error {
	rp, err := s.syncRepo(p.DID)
	if err != nil {
		return err
	}
	coll, err := parseCollection(p.Collection)
	if err != nil {
		return err
	}
	rkey, err := parseRKey(p.RKey)
	if err != nil {
		return err
	}
	car, err := rp.RecordProof(coll, rkey)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", carContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(car)))
	_, _ = w.Write(car)
	return nil
}

// maxGetBlocks bounds one getBlocks request.
const maxGetBlocks = 1000

type getBlocksParams struct {
	DID  string   `query:"did"`
	CIDs []string `query:"cids"`
}

func (s *server) getBlocks(w http.ResponseWriter, r *http.Request, p *getBlocksParams) error {
	rp, err := s.syncRepo(p.DID)
	if err != nil {
		return err
	}
	if len(p.CIDs) > maxGetBlocks {
		return invalidRequest("at most %d cids per request", maxGetBlocks)
	}
	cids := make([]cid.Cid, 0, len(p.CIDs))
	for _, v := range p.CIDs {
		c, err := cid.Decode(v)
		if err != nil {
			return invalidRequest("Invalid cid %q: %v", v, err)
		}
		cids = append(cids, c)
	}
	// Each block once, streamed a chunk at a time (a block named 1,000
	// times built a response 1,000 blocks long in memory).
	w.Header().Set("Content-Type", carContentType)
	cw := &countingWriter{w: w}
	missing, err := rp.WriteBlocksCAR(r.Context(), cw, cids)
	if len(missing) > 0 {
		w.Header().Del("Content-Type")
		ms := make([]string, len(missing))
		for i, c := range missing {
			ms[i] = c.String()
		}
		return xerr(http.StatusBadRequest, "BlockNotFound", "Could not find cids: %s", strings.Join(ms, ", "))
	}
	if err != nil && cw.n == 0 {
		w.Header().Del("Content-Type")
		return err
	}
	if err != nil && r.Context().Err() == nil {
		s.log.Debug("getBlocks cut short", "err", err)
	}
	return nil
}

type listReposParams struct{ Page pageParams }

// repoStatus is the status of the account's repository as listRepos and
// getRepoStatus answer it.
type repoStatus struct {
	DID    string `json:"did"`
	Head   string `json:"head,omitempty"`
	Rev    string `json:"rev,omitempty"`
	Active bool   `json:"active"`
	Status string `json:"status,omitempty"`
}

type listReposOutput struct {
	Repos []repoStatus `json:"repos"`
}

func (s *server) listRepos(ctx context.Context, p *listReposParams) (*listReposOutput, error) {
	out := &listReposOutput{Repos: []repoStatus{}}
	// One account: a cursor only ever points past it.
	if rp, err := s.accounts.Repo(); err == nil && p.Page.Cursor == "" {
		if c, rev, err := rp.Head(); err == nil {
			row := repoStatus{DID: rp.DID().String(), Head: c.String(), Rev: rev}
			s.repoStatusFields(ctx, &row)
			out.Repos = append(out.Repos, row)
		}
	}
	return out, nil
}

func (s *server) getRepoStatus(ctx context.Context, p *didParams) (*repoStatus, error) {
	if _, err := syntax.ParseDID(p.DID); err != nil {
		return nil, invalidRequest("Invalid did: %v", err)
	}
	rp, err := s.accounts.Repo()
	if err != nil || rp.DID().String() != p.DID {
		return nil, xerr(http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: %s", p.DID)
	}
	out := &repoStatus{DID: rp.DID().String()}
	s.repoStatusFields(ctx, out)
	// A repository migrating in has no commit until its import.
	if _, rev, err := rp.Head(); err == nil {
		out.Rev = rev
	} else if !errors.Is(err, repo.ErrNoHead) {
		return nil, err
	}
	return out, nil
}

// Websocket timing of subscribeRepos.
const (
	pingInterval = 30 * time.Second
	pongWait     = 90 * time.Second
	writeWait    = 15 * time.Second
)

// firehoseSendBuffer is the kernel send buffer of a firehose socket: at
// 100 ms round trip it still carries 2.5 MB/s to a relay.
const firehoseSendBuffer = 256 << 10

var upgrader = websocket.Upgrader{
	ReadBufferSize: 1 << 10,
	// Write buffers are taken per message and given back, so a thousand
	// idle subscribers hold none; a stalled one holds its buffer until the
	// write deadline, hence 16 KB rather than 64.
	WriteBufferSize: 16 << 10,
	WriteBufferPool: &sync.Pool{},
	// Any web page may read the public firehose.
	CheckOrigin: func(*http.Request) bool { return true },
}

type subscribeReposParams struct {
	Cursor *int64 `query:"cursor"`
}

func (s *server) subscribeRepos(w http.ResponseWriter, r *http.Request, p *subscribeReposParams) error {
	if p.Cursor != nil && *p.Cursor < 0 {
		return invalidRequest("Invalid cursor")
	}
	// Bound the open firehose sockets: each holds a goroutine pair and a
	// queue, and nothing else stops a client from opening thousands.
	ip, _ := netip.ParseAddr(s.clientIP(r))
	slot, ok := s.subSlots.take(ip)
	if !ok {
		return xerr(http.StatusServiceUnavailable, "TooManySubscribers", "too many firehose subscribers; try again later")
	}
	defer s.subSlots.release(slot)
	done := s.events.Track()
	defer done()
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil // the upgrader has answered
	}
	defer conn.Close()
	// Bound the kernel's send buffer too: a thousand stalled consumers
	// with autotuned buffers of megabytes each would hold gigabytes of
	// kernel memory (counted in a container's memory limit).
	if tc, ok := conn.NetConn().(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(firehoseSendBuffer)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Read side: consumers send nothing but control frames; a read error
	// means they are gone.
	conn.SetReadLimit(4 << 10)
	_ = conn.SetReadDeadline(time.Now().Add(pongWait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(pongWait)) })
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	go func() {
		t := time.NewTicker(pingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
					cancel()
					return
				}
			}
		}
	}()
	send := func(frame []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
		return conn.WriteMessage(websocket.BinaryMessage, frame)
	}
	info := func(i events.Info) error { return send(events.InfoFrame(i.Name, i.Message)) }
	err = s.events.Subscribe(ctx, p.Cursor, info, send)
	var closing []byte
	switch {
	case errors.Is(err, events.ErrFutureCursor):
		_ = send(events.ErrorFrame("FutureCursor", "Cursor in the future."))
		closing = websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "FutureCursor")
	case errors.Is(err, events.ErrConsumerTooSlow):
		_ = send(events.ErrorFrame("ConsumerTooSlow", "Stream consumer too slow"))
		closing = websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "ConsumerTooSlow")
	case errors.Is(err, events.ErrClosed):
		closing = websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	default:
		closing = websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	}
	_ = conn.WriteControl(websocket.CloseMessage, closing, time.Now().Add(time.Second))
	return nil
}

// countingWriter counts the bytes written through it, to tell an error
// before the response began from one after.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
