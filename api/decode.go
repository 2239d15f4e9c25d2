package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// decodeJSON reads a JSON body of at most limit bytes into v, rejecting
// trailing data and bodies that are not JSON.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return invalidRequest("Wrong request encoding (Content-Type): %s", ct)
		}
	}
	if r.ContentLength > limit {
		return xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large")
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return invalidRequest("Request body is empty")
		}
		return invalidRequest("Invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidRequest("Invalid JSON body: trailing data")
	}
	return nil
}
