package api

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/pdsbox/pds/blobstore"
)

// blobRef is a blob reference as records hold it.
type blobRef struct {
	Type string `json:"$type"`
	Ref  struct {
		Link string `json:"$link"`
	} `json:"ref"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
}

type uploadBlobOutput struct {
	Blob blobRef `json:"blob"`
}

func (s *server) uploadBlob(ctx context.Context, in *rawBody) (*uploadBlobOutput, error) {
	if s.cfg.BlobUploadLimit > 0 && in.Length > s.cfg.BlobUploadLimit {
		return nil, xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large")
	}
	if _, err := s.accounts.Repo(); err != nil {
		return nil, err
	}
	// A scoped token names the MIME types it may upload: the declared type
	// is checked before reading, the sniffed one after (an unreferenced
	// upload is collected like any other).
	if err := principalFrom(ctx).CanBlob(in.ContentType); err != nil {
		return nil, err
	}
	// The blob store stops reading at its size limit; the body is streamed,
	// its Content-Encoding undone (the blob is the decoded bytes).
	decoded, err := decodeContent(in.Body, in.ContentEncoding)
	if err != nil {
		return nil, err
	}
	body := &bodyReader{r: decoded}
	info, err := s.blobs.Upload(ctx, body, in.ContentType)
	if err != nil && body.err != nil && !errors.Is(err, blobstore.ErrTooLarge) {
		// A body cut short, badly chunked or badly encoded is the client's
		// fault.
		var xe *XRPCError
		if !errors.As(body.err, &xe) {
			xe = &XRPCError{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "request body could not be read", Err: err}
		}
		return nil, xe
	}
	if err != nil {
		return nil, err
	}
	if err := principalFrom(ctx).CanBlob(info.MimeType); err != nil {
		return nil, err
	}
	out := &uploadBlobOutput{Blob: blobRef{Type: "blob", MimeType: info.MimeType, Size: info.Size}}
	out.Blob.Ref.Link = info.CID.String()
	return out, nil
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
