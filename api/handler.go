package api

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// decodeJSON reads a JSON body of at most limit bytes (before and after
// its Content-Encoding is undone) into v, rejecting a missing or other
// Content-Type, an unknown Content-Encoding, trailing data and bodies that
// are not JSON, with the reference's messages.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		if r.ContentLength == 0 {
			return invalidRequest("A request body is expected but none was provided")
		}
		return invalidRequest("Request encoding (Content-Type) required but not provided")
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return invalidRequest("Wrong request encoding (Content-Type): %s", ct)
	}
	if r.ContentLength > limit {
		return xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large")
	}
	body, err := decodeContent(http.MaxBytesReader(w, r.Body, limit), r.Header.Get("Content-Encoding"))
	if err != nil {
		return err
	}
	// The decoded body is bounded too: a small gzip can inflate to gigabytes.
	dec := json.NewDecoder(&limitedBody{r: body, n: limit})
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var xe *XRPCError
		if errors.As(err, &mbe) || errors.As(err, &xe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return invalidRequest("Request body is empty")
		}
		return describeJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		var xe *XRPCError
		if errors.As(err, &mbe) || errors.As(err, &xe) {
			return err
		}
		return invalidRequest("Invalid JSON body: trailing data")
	}
	return nil
}

// limitedBody reads at most n bytes and then fails with 413.
type limitedBody struct {
	r io.Reader
	n int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// At the limit: only more data is too much; the end is fine.
		var one [1]byte
		if n, err := l.r.Read(one[:]); n > 0 {
			return 0, xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "request entity too large")
		} else {
			return 0, err
		}
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
