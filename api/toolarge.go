package api

import (
	"io"
	"net/http"
	"time"
)

// Bounds of reading what remains of an oversized request body after the 413
// is sent: enough for a client sending a few megabytes too many to finish
// and read the answer, not enough to tie the connection up.
const (
	drainMaxBytes = 8 << 20
	drainMaxTime  = 2 * time.Second
)

// answerTooLarge sends err (a 413) with Connection: close and then reads
// and discards what remains of the request body, within bounds, before the
// server closes the connection. Closing with unread data in the socket
// makes the kernel reset the connection, and a client still sending its
// body (most do not wait for 100-continue) would lose the answer with it.
func answerTooLarge(w http.ResponseWriter, r *http.Request, status int, body any) {
	w.Header().Set("Connection", "close")
	writeJSON(w, status, body)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(drainMaxTime))
	rest := io.Reader(r.Body)
	if d, ok := r.Body.(*deadlineBody); ok {
		// Its per-read deadline would push past drainMaxTime.
		rest = d.ReadCloser
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(rest, drainMaxBytes))
}
