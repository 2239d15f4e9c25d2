package relaye2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/did-method-plc/go-didplc"
)

// mockPLC is a PLC directory on 127.0.0.1: it accepts a genesis operation
// (and later updates) whose signature verifies and whose DID matches, and
// serves the resulting DID document. Our server submits to it; the relay
// resolves through it.
type mockPLC struct {
	*httptest.Server
	mu       sync.Mutex
	ops      map[string][]didplc.RegularOp
	gets     map[string]int
	rejected []string
}

func newMockPLC(t *testing.T) *mockPLC {
	m := &mockPLC{ops: map[string][]didplc.RegularOp{}, gets: map[string]int{}}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve)) // binds 127.0.0.1:0
	t.Cleanup(m.Close)
	return m
}

// Resolutions is how many times did's document was fetched.
func (m *mockPLC) Resolutions(did string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets[did]
}

// Rejected lists the operations refused, with the reason.
func (m *mockPLC) Rejected() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.rejected...)
}

func (m *mockPLC) fail(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	m.mu.Lock()
	m.rejected = append(m.rejected, msg)
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (m *mockPLC) serve(w http.ResponseWriter, r *http.Request) {
	did := strings.TrimPrefix(r.URL.Path, "/")
	switch r.Method {
	case http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			m.fail(w, 400, "read: %v", err)
			return
		}
		var op didplc.RegularOp
		if err := json.Unmarshal(body, &op); err != nil {
			m.fail(w, 400, "decode: %v", err)
			return
		}
		if err := m.accept(did, op); err != nil {
			m.fail(w, 400, "%v", err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		did, tail, _ := strings.Cut(did, "/")
		m.mu.Lock()
		ops := m.ops[did]
		m.gets[did]++
		m.mu.Unlock()
		if len(ops) == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(map[string]string{"message": "DID not registered: " + did})
			return
		}
		if tail == "log/last" {
			// The last operation: what an update (signPlcOperation) follows.
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(ops[len(ops)-1])
			return
		}
		doc, err := ops[len(ops)-1].Doc(did)
		if err != nil {
			m.fail(w, 500, "doc: %v", err)
			return
		}
		w.Header().Set("Content-Type", "application/did+ld+json")
		_ = json.NewEncoder(w).Encode(doc)
	default:
		m.fail(w, 405, "method not allowed")
	}
}

// accept checks op against did's log and appends it.
func (m *mockPLC) accept(did string, op didplc.RegularOp) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.ops[did]
	keys := op.RotationKeys
	if len(prev) == 0 {
		if !op.IsGenesis() {
			return fmt.Errorf("first operation must be a genesis")
		}
		if computed, err := op.DID(); err != nil || computed != did {
			return fmt.Errorf("DID %s does not match the operation (%s, %v)", did, computed, err)
		}
	} else {
		last := prev[len(prev)-1]
		if op.Prev == nil || *op.Prev != last.CID().String() {
			return fmt.Errorf("prev does not point at the last operation")
		}
		keys = last.RotationKeys
	}
	if _, err := didplc.VerifySignatureAny(&op, keys); err != nil {
		return fmt.Errorf("invalid signature: %w", err)
	}
	m.ops[did] = append(m.ops[did], op)
	return nil
}
