package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCORS(t *testing.T) {
	reached := false
	h := cors(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
	tests := []struct {
		name        string
		method      string
		headers     map[string]string
		wantStatus  int
		wantReached bool
		wantHeaders map[string]string
	}{
		{"preflight", "OPTIONS", map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"},
			204, false, map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "authorization,content-type", "Access-Control-Max-Age": "86400"}},
		{"plain OPTIONS is not a preflight", "OPTIONS", nil, 200, true, map[string]string{"Access-Control-Allow-Origin": "*"}},
		{"GET", "GET", nil, 200, true, map[string]string{"Access-Control-Allow-Origin": "*"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reached = false
			req := httptest.NewRequest(tc.method, "/xrpc/x.y.z", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus || reached != tc.wantReached {
				t.Fatalf("status %d reached %v, want %d %v", rec.Code, reached, tc.wantStatus, tc.wantReached)
			}
			for k, v := range tc.wantHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}
}
