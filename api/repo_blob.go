package api

import (
	"errors"
	"io"
	"net/http"

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
	// A scoped token names the MIME types it may upload: the declared type
	// is checked before reading, the sniffed one after (an unreferenced
	// upload is collected like any other).
	if err := principalFrom(r.Context()).CanBlob(r.Header.Get("Content-Type")); err != nil {
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
	if err == nil {
		err = principalFrom(r.Context()).CanBlob(info.MimeType)
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
