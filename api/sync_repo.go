package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
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

func (s *server) getRepo(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rp, err := s.syncRepo(q.Get("did"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	since := q.Get("since")
	if since != "" {
		if _, err := syntax.ParseTID(since); err != nil {
			writeError(w, r, s.log, invalidRequest("Invalid since: %v", err))
			return
		}
	}
	w.Header().Set("Content-Type", carContentType)
	// Once streaming has begun an error can only cut the body short.
	if err := rp.ExportSince(r.Context(), w, since); err != nil && r.Context().Err() == nil {
		s.log.Error("getRepo stream failed", "err", err)
	}
}

// getCheckout is the deprecated full-repository export.
func (s *server) getCheckout(w http.ResponseWriter, r *http.Request) {
	rp, err := s.syncRepo(r.URL.Query().Get("did"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", carContentType)
	if err := rp.ExportCAR(r.Context(), w); err != nil && r.Context().Err() == nil {
		s.log.Error("getCheckout stream failed", "err", err)
	}
}

func (s *server) getLatestCommit(w http.ResponseWriter, r *http.Request) {
	rp, err := s.syncRepo(r.URL.Query().Get("did"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	c, rev, err := rp.Head()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"cid": c.String(), "rev": rev})
}

// getHead is the deprecated form of getLatestCommit.
func (s *server) getHead(w http.ResponseWriter, r *http.Request) {
	rp, err := s.syncRepo(r.URL.Query().Get("did"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	c, _, err := rp.Head()
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"root": c.String()})
}

func (s *server) syncGetRecord(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	err := func() error {
		rp, err := s.syncRepo(q.Get("did"))
		if err != nil {
			return err
		}
		coll, err := parseCollection(q.Get("collection"))
		if err != nil {
			return err
		}
		rkey, err := parseRKey(q.Get("rkey"))
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
	}()
	if err != nil {
		writeError(w, r, s.log, err)
	}
}

// maxGetBlocks bounds one getBlocks request.
const maxGetBlocks = 1000

func (s *server) getBlocks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	err := func() error {
		rp, err := s.syncRepo(q.Get("did"))
		if err != nil {
			return err
		}
		raw := q["cids"]
		if len(raw) > maxGetBlocks {
			return invalidRequest("at most %d cids per request", maxGetBlocks)
		}
		cids := make([]cid.Cid, 0, len(raw))
		for _, v := range raw {
			c, err := cid.Decode(v)
			if err != nil {
				return invalidRequest("Invalid cid %q: %v", v, err)
			}
			cids = append(cids, c)
		}
		found, missing, err := rp.Blocks(cids)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			ms := make([]string, len(missing))
			for i, c := range missing {
				ms[i] = c.String()
			}
			return xerr(http.StatusBadRequest, "BlockNotFound", "Could not find cids: %s", strings.Join(ms, ", "))
		}
		w.Header().Set("Content-Type", carContentType)
		return repo.WriteCAR(w, nil, found)
	}()
	if err != nil {
		writeError(w, r, s.log, err)
	}
}

func (s *server) listRepos(w http.ResponseWriter, r *http.Request) {
	if _, err := intParam(r.URL.Query().Get("limit"), 500, 1, 1000); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	repos := []map[string]any{}
	// One account: a cursor only ever points past it.
	if rp, err := s.accounts.Repo(); err == nil && r.URL.Query().Get("cursor") == "" {
		if c, rev, err := rp.Head(); err == nil {
			row := map[string]any{"did": rp.DID().String(), "head": c.String(), "rev": rev}
			s.repoStatusFields(r.Context(), row)
			repos = append(repos, row)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"repos": repos})
}

func (s *server) getRepoStatus(w http.ResponseWriter, r *http.Request) {
	did := r.URL.Query().Get("did")
	if _, err := syntax.ParseDID(did); err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid did: %v", err))
		return
	}
	rp, err := s.accounts.Repo()
	if err != nil || rp.DID().String() != did {
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: %s", did))
		return
	}
	out := map[string]any{"did": rp.DID().String()}
	s.repoStatusFields(r.Context(), out)
	// A repository migrating in has no commit until its import.
	if _, rev, err := rp.Head(); err == nil {
		out["rev"] = rev
	} else if !errors.Is(err, repo.ErrNoHead) {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// maxSubscribers bounds concurrent subscribeRepos connections.
const maxSubscribers = 1024

// Websocket timing of subscribeRepos.
const (
	pingInterval = 30 * time.Second
	pongWait     = 90 * time.Second
	writeWait    = 15 * time.Second
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1 << 10,
	WriteBufferSize: 64 << 10,
	// Any web page may read the public firehose.
	CheckOrigin: func(*http.Request) bool { return true },
}

func (s *server) subscribeRepos(w http.ResponseWriter, r *http.Request) {
	var cursor *int64
	if v := r.URL.Query().Get("cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, r, s.log, invalidRequest("Invalid cursor"))
			return
		}
		cursor = &n
	}
	// Bound the open firehose sockets: each holds a goroutine pair and a
	// queue, and nothing else stops a client from opening thousands.
	if n := s.subscribers.Add(1); n > maxSubscribers {
		s.subscribers.Add(-1)
		writeError(w, r, s.log, xerr(http.StatusServiceUnavailable, "TooManySubscribers", "too many firehose subscribers; try again later"))
		return
	}
	defer s.subscribers.Add(-1)
	done := s.events.Track()
	defer done()
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
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
	err = s.events.Subscribe(ctx, cursor, info, send)
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
}
