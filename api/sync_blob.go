package api

import (
	"context"
	"net/http"

	"github.com/ipfs/go-cid"
)

// ourDID checks the did parameter of sync methods against the account.
func (s *server) ourDID(did string) error {
	rp, err := s.accounts.Repo()
	if err != nil || rp.DID().String() != did {
		return xerr(http.StatusBadRequest, "RepoNotFound", "Could not find repo for DID: %s", did)
	}
	return s.repoTakendown(context.Background(), did)
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
	if info.Refs == 0 || s.accounts.BlobTakedown(c.String()).Applied {
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
