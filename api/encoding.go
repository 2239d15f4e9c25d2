package api

import (
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
)

// errUnsupportedEncoding is the reference's answer to a Content-Encoding it
// cannot decode: 415 UnsupportedMediaType.
var errUnsupportedEncoding = xerr(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "unsupported content-encoding")

// decodeContent undoes the Content-Encoding of a request body: identity,
// gzip (x-gzip) and deflate, applied in the order listed, as the reference
// accepts them. Brotli, which the reference also takes, is refused like
// any other coding (415): no brotli decoder is among our dependencies.
// Errors in the encoding come out of Read as 400 InvalidRequest.
func decodeContent(body io.Reader, contentEncoding string) (io.Reader, error) {
	if strings.TrimSpace(contentEncoding) == "" {
		return body, nil
	}
	codings := strings.Split(contentEncoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		var err error
		switch c := strings.ToLower(strings.TrimSpace(codings[i])); c {
		case "identity", "":
			continue
		case "gzip", "x-gzip":
			body, err = gzip.NewReader(body)
		case "deflate":
			body, err = zlib.NewReader(body)
		default:
			return nil, errUnsupportedEncoding
		}
		if err != nil {
			return nil, asBodyError(err)
		}
		body = clientReader{body}
	}
	return body, nil
}

// asBodyError makes a decoder's error the client's: 400 InvalidRequest,
// except a body over its limit, which stays a 413.
func asBodyError(err error) error {
	var mbe *http.MaxBytesError
	var xe *XRPCError
	if errors.As(err, &mbe) || errors.As(err, &xe) {
		return err
	}
	return &XRPCError{Status: http.StatusBadRequest, Name: "InvalidRequest", Message: "Request body could not be decoded (Content-Encoding): " + err.Error(), Err: err}
}

// clientReader turns a decoder's errors (corrupt gzip, truncated deflate)
// into the client's errors, so a bad body is never a server error.
type clientReader struct{ r io.Reader }

func (c clientReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = asBodyError(err)
	}
	return n, err
}
