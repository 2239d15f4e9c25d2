// Package testpds holds the helpers end-to-end tests share: a mock PLC
// directory and a fake DNS-free world on 127.0.0.1.
package testpds

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

// MockPLC is a PLC directory on 127.0.0.1 that accepts only genesis and
// update operations whose signature verifies and whose DID matches, and
// serves the resulting documents.
type MockPLC struct {
	*httptest.Server
	mu  sync.Mutex
	ops map[string][]didplc.RegularOp
	// Rejected counts operations refused for a bad signature or DID.
	Rejected int
}

// NewMockPLC starts a mock PLC directory, closed with the test.
func NewMockPLC(t testing.TB) *MockPLC {
	m := &MockPLC{ops: map[string][]didplc.RegularOp{}}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

// Ops returns the operations accepted for did.
func (m *MockPLC) Ops(did string) []didplc.RegularOp {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]didplc.RegularOp(nil), m.ops[did]...)
}

func (m *MockPLC) fail(w http.ResponseWriter, status int, format string, args ...any) {
	m.mu.Lock()
	m.Rejected++
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf(format, args...)})
}

func (m *MockPLC) serve(w http.ResponseWriter, r *http.Request) {
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
		m.mu.Lock()
		prev := m.ops[did]
		m.mu.Unlock()
		keys := op.RotationKeys
		if len(prev) == 0 {
			if !op.IsGenesis() {
				m.fail(w, 400, "first operation must be a genesis")
				return
			}
			computed, err := op.DID()
			if err != nil || computed != did {
				m.fail(w, 400, "DID %s does not match the operation (%s)", did, computed)
				return
			}
		} else {
			last := prev[len(prev)-1]
			if op.Prev == nil || *op.Prev != last.CID().String() {
				m.fail(w, 400, "prev does not point at the last operation")
				return
			}
			keys = last.RotationKeys
		}
		if _, err := didplc.VerifySignatureAny(&op, keys); err != nil {
			m.fail(w, 400, "invalid signature: %v", err)
			return
		}
		m.mu.Lock()
		m.ops[did] = append(m.ops[did], op)
		m.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		did, tail, _ := strings.Cut(did, "/")
		m.mu.Lock()
		ops := m.ops[did]
		m.mu.Unlock()
		if tail == "log/last" && len(ops) > 0 {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(ops[len(ops)-1])
			return
		}
		if len(ops) == 0 {
			m.fail(w, 404, "DID not registered: %s", did)
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
