package api

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/blobstore"
)

func (s *server) uploadBlob(w http.ResponseWriter, r *http.Request) {
	if s.cfg.BlobUploadLimit > 0 && r.ContentLength > s.cfg.BlobUploadLimit {
		writeError(w, r, s.log, xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large"))
		return
	}
	if _, err := s.accounts.Repo(); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// The blob store stops reading at its size limit; the body is streamed,
	// its Content-Encoding undone (the blob is the decoded bytes).
	decoded, err := decodeContent(r.Body, r.Header.Get("Content-Encoding"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	body := &bodyReader{r: decoded}
	info, err := s.blobs.Upload(r.Context(), body, r.Header.Get("Content-Type"))
	if err != nil && body.err != nil && !errors.Is(err, blobstore.ErrTooLarge) {
		// A body cut short, badly chunked or badly encoded is the client's
		// fault.
		var xe *XRPCError
		if !errors.As(body.err, &xe) {
			xe = &XRPCError{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "request body could not be read", Err: err}
		}
		err = xe
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"blob": map[string]any{
		"$type":    "blob",
		"ref":      map[string]string{"$link": info.CID.String()},
		"mimeType": info.MimeType,
		"size":     info.Size,
	}})
}

// bodyReader remembers the error of reading a request body, so that an
// upload that fails because of it is told apart from a server failure.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// ourDID checks the did parameter of sync methods against the account.
func (s *server) ourDID(did string) error {
	rp, err := s.accounts.Repo()
	if err != nil || rp.DID().String() != did {
		return xerr(http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: %s", did)
	}
	return nil
}

func (s *server) getBlob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := s.ourDID(q.Get("did")); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	c, err := cid.Decode(q.Get("cid"))
	if err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid cid: %v", err))
		return
	}
	f, info, err := s.blobs.Open(r.Context(), c)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	defer f.Close()
	if info.Refs == 0 {
		// Like the reference: an upload no record references is not served.
		writeError(w, r, s.log, xerr(http.StatusBadRequest, "BlobNotFound", "Blob not found"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", info.MimeType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Content-Disposition", "attachment; filename=\""+c.String()+"\"")
	// A CID names immutable bytes.
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", "\""+c.String()+"\"")
	http.ServeContent(w, r, "", info.CreatedAt, f)
}

func (s *server) listBlobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := s.ourDID(q.Get("did")); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	limit, err := intParam(q.Get("limit"), 500, 1, 1000)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	cids, next, err := s.blobs.List(r.Context(), q.Get("cursor"), limit)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	list := make([]string, len(cids))
	for i, c := range cids {
		list[i] = c.String()
	}
	out := map[string]any{"cids": list}
	if next != "" {
		out["cursor"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

// hostOf is the request's host name without port, lower-cased.
func hostOf(r *http.Request) string {
	h := r.Host
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}
