package api

import (
	"context"
	"net/http"

	"github.com/ipfs/go-cid"
)

type getBlobParams struct {
	DID string `query:"did"`
	CID string `query:"cid"`
}

func (s *server) getBlob(w http.ResponseWriter, r *http.Request, p *getBlobParams) error {
	if _, err := s.syncRepo(p.DID); err != nil {
		return err
	}
	c, err := cid.Decode(p.CID)
	if err != nil {
		return invalidRequest("Invalid cid: %v", err)
	}
	f, info, err := s.blobs.Open(r.Context(), c)
	if err != nil {
		return err
	}
	defer f.Close()
	if info.Refs == 0 || s.accounts.BlobTakedown(c.String()).Applied {
		// Like the reference: an upload no record references is not served.
		return xerr(http.StatusBadRequest, "BlobNotFound", "Blob not found")
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
	return nil
}

type listBlobsParams struct {
	DID  string `query:"did"`
	Page pageParams
}

type listBlobsOutput struct {
	Cursor string   `json:"cursor,omitempty"`
	CIDs   []string `json:"cids"`
}

func (s *server) listBlobs(ctx context.Context, p *listBlobsParams) (*listBlobsOutput, error) {
	if _, err := s.syncRepo(p.DID); err != nil {
		return nil, err
	}
	cids, next, err := s.blobs.List(ctx, p.Page.Cursor, p.Page.Limit)
	if err != nil {
		return nil, err
	}
	out := &listBlobsOutput{Cursor: next, CIDs: make([]string, len(cids))}
	for i, c := range cids {
		out.CIDs[i] = c.String()
	}
	return out, nil
}
