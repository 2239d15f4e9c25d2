package blobstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	bolt "go.etcd.io/bbolt"
)

// Upload stores the bytes read from r as a new, unreferenced blob and returns
// its metadata.
//
// The bytes are streamed to a file in Dir/tmp while being hashed (sha2-256)
// and counted; at most MaxSize+1 bytes are read, and a longer body gives
// ErrTooLarge. The CID is a CIDv1 with the raw codec. The media type is
// sniffed from the first 512 bytes; declaredType (the request's
// Content-Type) is used only when sniffing finds nothing more specific than
// application/octet-stream and declaredType is a concrete media type (not
// empty, not */*).
//
// The finished file is fsynced and renamed to Dir/blobs/<cid>, then its
// metadata is written. Uploading the same bytes again is idempotent: it keeps
// the first CreatedAt and MimeType and returns the current Refs, and restarts
// the grace period of a still unreferenced blob. If r fails, ctx is cancelled
// or the limit is exceeded, no file and no metadata are left behind and the
// error wraps the cause (ErrTooLarge, ctx.Err(), or r's error).
func (s *Store) Upload(ctx context.Context, r io.Reader, declaredType string) (*Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The name is marked active before the file exists, so a concurrent
	// sweep of stale temp files can never see it unmarked.
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	base := "upload-" + hex.EncodeToString(rnd[:])
	tmpName := filepath.Join(s.cfg.Dir, tmpDir, base)
	s.setActive(base, true)
	tmp, err := os.OpenFile(tmpName, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		s.setActive(base, false)
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
		s.setActive(filepath.Base(tmpName), false)
	}()

	limit := s.cfg.MaxSize
	if limit < math.MaxInt64 {
		limit++
	}
	h := sha256.New()
	head := &headWriter{max: sniffLen}
	n, err := io.Copy(io.MultiWriter(tmp, h, head), io.LimitReader(ctxReader{ctx, r}, limit))
	if err != nil {
		return nil, fmt.Errorf("blobstore: reading upload: %w", err)
	}
	if n > s.cfg.MaxSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, s.cfg.MaxSize)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}

	mh, err := multihash.Encode(h.Sum(nil), multihash.SHA2_256)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	c := cid.NewCidV1(cid.Raw, mh)
	mimeType := mediaType(head.buf, declaredType)

	s.mu.Lock()
	defer s.mu.Unlock()
	dst := s.blobPath(c)
	_, statErr := os.Stat(dst)
	existed := statErr == nil
	if err := os.Rename(tmpName, dst); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	renamed = true
	if err := syncDir(filepath.Join(s.cfg.Dir, blobsDir)); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}

	now := s.cfg.Now().UnixNano()
	var info *Info
	err = s.db.Update(func(tx *bolt.Tx) error {
		m, err := getMeta(tx, c)
		switch {
		case errors.Is(err, ErrNotFound):
			m = &meta{MimeType: mimeType, Size: n, Created: now, Unref: now}
			// Records imported before their blobs already reference it.
			if m.Refs, err = adoptMissing(tx, c); err != nil {
				return err
			}
		case err != nil:
			return err
		case m.Refs <= 0:
			m.Unref = now
		}
		if err := putMeta(tx, c, m); err != nil {
			return err
		}
		info = m.info(c)
		return nil
	})
	if err != nil {
		if !existed {
			_ = os.Remove(dst)
		}
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	return info, nil
}

// setActive marks a temp file as belonging to an upload in progress (or no
// longer).
func (s *Store) setActive(name string, on bool) {
	s.tmpMu.Lock()
	defer s.tmpMu.Unlock()
	if on {
		s.active[name] = struct{}{}
	} else {
		delete(s.active, name)
	}
}

func (s *Store) isActive(name string) bool {
	s.tmpMu.Lock()
	defer s.tmpMu.Unlock()
	_, ok := s.active[name]
	return ok
}

// ctxReader fails reads once ctx is done, so a cancelled request stops an
// upload at the next chunk.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// headWriter keeps the first max bytes written to it.
type headWriter struct {
	buf []byte
	max int
}

func (w *headWriter) Write(p []byte) (int, error) {
	if room := w.max - len(w.buf); room > 0 {
		w.buf = append(w.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// syncDir fsyncs a directory so that a rename into it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
