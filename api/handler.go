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

// procedure adapts a JSON procedure: decode a body of at most limit bytes
// into In, run do, answer its output or its error.
func procedure[In any](s *server, limit int64, do func(*http.Request, *In) (map[string]any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if err := decodeJSON(w, r, limit, &in); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		out, err := do(r, &in)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}
