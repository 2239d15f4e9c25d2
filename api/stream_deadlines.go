package api

import (
	"io"
	"net/http"
	"time"
)

// streamIdle is how long one read of a streamed request body or one write
// of a streamed response may block before the connection is cut.
const streamIdle = 30 * time.Second

// streamDeadlines replaces the server's whole-request read and write
// timeouts with a deadline per read and per write, for the routes whose
// bodies are large (getRepo, getCheckout, getBlob, uploadBlob): a slow but
// live client takes as long as it needs, a stalled one is cut off after
// streamIdle without a byte moving.
func streamDeadlines(next http.Handler) http.Handler { return streamDeadlinesIdle(streamIdle)(next) }

// streamDeadlinesIdle is streamDeadlines with a given idle time.
func streamDeadlinesIdle(idle time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			_ = rc.SetReadDeadline(time.Now().Add(idle))
			_ = rc.SetWriteDeadline(time.Now().Add(idle))
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, idle: idle}
			}
			next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, idle: idle}, r)
		})
	}
}

type deadlineWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.idle))
	return d.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	_ = d.rc.SetReadDeadline(time.Now().Add(d.idle))
	return d.ReadCloser.Read(p)
}
