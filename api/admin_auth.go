package api

import "net/http"

// requireAdmin lets through only HTTP Basic admin:<PDS_ADMIN_PASSWORD>
// (compared in constant time by isAdmin). A bearer token, a user's, is
// refused like any other wrong credential.
func (s *server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			writeError(w, r, s.log, errAuthMissing)
			return
		}
		if !s.isAdmin(r) {
			writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthenticationRequired", "Invalid admin credentials"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
