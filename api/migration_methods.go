package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/repo"
)

// The migration and account-lifecycle methods: createAccount with an
// existing DID, importRepo, listMissingBlobs, checkAccountStatus,
// activate/deactivate/deleteAccount, signPlcOperation, submitPlcOperation.

// DefaultMaxImportBytes bounds an importRepo body when Config does not.
const DefaultMaxImportBytes = repo.DefaultImportMaxBytes

// createMigratingAccount is createAccount with an existing DID: a Bearer
// service-auth JWT from that DID (aud = this server, lxm = createAccount),
// verified against the key its document names now, is required.
func (s *server) createMigratingAccount(w http.ResponseWriter, r *http.Request, in createAccountInput) {
	if in.PLCOp != nil {
		writeError(w, r, s.log, invalidRequest("plcOp is not supported: bring the DID with a service-auth token instead"))
		return
	}
	did, err := syntax.ParseDID(in.DID)
	if err != nil {
		writeError(w, r, s.log, invalidRequest("Invalid did: %v", err))
		return
	}
	tok, ok := bearer(r)
	if !ok {
		writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthMissing", "a service-auth token from %s is required to create an account with an existing DID", did))
		return
	}
	if s.resolver == nil {
		writeError(w, r, s.log, invalidRequest("this server cannot resolve DIDs"))
		return
	}
	keys := func(ctx context.Context, d syntax.DID, refresh bool) (atcrypto.PublicKey, error) {
		return s.resolver.SigningKey(ctx, d, refresh)
	}
	iss, err := auth.VerifyServiceJWT(r.Context(), tok, s.cfg.ServiceDID, "com.atproto.server.createAccount", keys, time.Now())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if iss != did {
		writeError(w, r, s.log, xerr(http.StatusUnauthorized, "AuthRequired", "the service-auth token was issued by %s, not %s", iss, did))
		return
	}
	acct, err := s.accounts.CreateMigrating(r.Context(), did, account.CreateParams{Handle: in.Handle, Email: in.Email, Password: in.Password})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	sess, err := s.auth.Login(r.Context(), acct.DID.String(), in.Password)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"accessJwt": sess.AccessJWT, "refreshJwt": sess.RefreshJWT,
		"handle": sess.Handle.String(), "did": sess.DID.String(),
	})
}

func (s *server) importRepo(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != carContentType && mt != "application/octet-stream") {
			writeError(w, r, s.log, invalidRequest("Wrong request encoding (Content-Type): %s, want %s", ct, carContentType))
			return
		}
	}
	limit := s.cfg.MaxImportBytes
	if limit <= 0 {
		limit = DefaultMaxImportBytes
	}
	if r.ContentLength > limit {
		writeError(w, r, s.log, xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "the CAR is over %d bytes", limit))
		return
	}
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, limit)}
	c, err := s.accounts.ImportRepo(r.Context(), body, repo.ImportOptions{MaxBytes: limit})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "the CAR is over %d bytes", limit)
		}
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Atproto-Repo-Rev", c.Rev)
	w.WriteHeader(http.StatusOK)
}

func (s *server) listMissingBlobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 500, 1, 1000)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	st, err := s.accounts.Lifecycle(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	missing, next, err := s.blobs.ListMissing(r.Context(), q.Get("cursor"), limit)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	blobs := make([]map[string]string, 0, len(missing))
	for _, m := range missing {
		blobs = append(blobs, map[string]string{"cid": m.CID.String(), "recordUri": "at://" + st.DID.String() + "/" + m.Path})
	}
	out := map[string]any{"blobs": blobs}
	if next != "" {
		out["cursor"] = next
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) checkAccountStatus(w http.ResponseWriter, r *http.Request) {
	cs, err := s.accounts.CheckAccountStatus(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"activated":          cs.Activated,
		"validDid":           cs.ValidDID,
		"repoCommit":         cs.RepoCommit,
		"repoRev":            cs.RepoRev,
		"repoBlocks":         cs.RepoBlocks,
		"indexedRecords":     cs.IndexedRecords,
		"privateStateValues": cs.PrivateStateValues,
		"expectedBlobs":      cs.ExpectedBlobs,
		"importedBlobs":      cs.ImportedBlobs,
	})
}

func (s *server) activateAccount(w http.ResponseWriter, r *http.Request) {
	if err := s.accounts.ActivateAccount(r.Context()); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) deactivateAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		DeleteAfter string `json:"deleteAfter"`
	}
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	var after time.Time
	if in.DeleteAfter != "" {
		dt, err := syntax.ParseDatetimeLenient(in.DeleteAfter)
		if err != nil {
			writeError(w, r, s.log, invalidRequest("Invalid deleteAfter: %v", err))
			return
		}
		after = dt.Time()
	}
	if err := s.accounts.DeactivateAccount(r.Context(), after); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *server) deleteAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		DID      string `json:"did"`
		Password string `json:"password"`
		Token    string `json:"token"`
	}
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	did, err := syntax.ParseDID(in.DID)
	if err != nil || in.Password == "" || in.Token == "" {
		writeError(w, r, s.log, invalidRequest("did, password and token are required"))
		return
	}
	if err := rateLimit(w, limitCheck{s.loginIP, s.clientIP(r)}); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := s.accounts.Delete(r.Context(), did, in.Password, in.Token); err != nil {
		if errors.Is(err, auth.ErrInvalidLogin) || errors.Is(err, account.ErrWrongDID) || errors.Is(err, account.ErrNoAccount) {
			err = xerr(http.StatusUnauthorized, "AuthRequired", "Invalid did or password")
		}
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type signPlcOperationInput struct {
	Token               string                      `json:"token"`
	RotationKeys        []string                    `json:"rotationKeys"`
	AlsoKnownAs         []string                    `json:"alsoKnownAs"`
	VerificationMethods map[string]string           `json:"verificationMethods"`
	Services            map[string]didplc.OpService `json:"services"`
}

func (s *server) signPlcOperation(w http.ResponseWriter, r *http.Request) {
	var in signPlcOperationInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if in.Token == "" {
		writeError(w, r, s.log, invalidRequest("email confirmation token required to sign PLC operations"))
		return
	}
	op, err := s.accounts.SignPLCOperation(r.Context(), in.Token, identity.PLCChanges{
		RotationKeys: in.RotationKeys, AlsoKnownAs: in.AlsoKnownAs,
		VerificationMethods: in.VerificationMethods, Services: in.Services,
	})
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"operation": op})
}

func (s *server) submitPlcOperation(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	var op didplc.RegularOp
	if len(in.Operation) == 0 || json.Unmarshal(in.Operation, &op) != nil {
		writeError(w, r, s.log, invalidRequest("operation must be a signed plc_operation object"))
		return
	}
	if err := s.accounts.SubmitPLCOperation(r.Context(), &op); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// repoUnavailable is the error of others' reads of a deactivated
// repository, as the reference's assertRepoAvailability answers.
func (s *server) repoUnavailable(ctx context.Context, did string) error {
	st, err := s.accounts.Lifecycle(ctx)
	if err != nil || st.Status != account.StatusDeactivated || (st.DID.String() != did && st.Handle.String() != did) {
		return nil
	}
	return xerr(http.StatusBadRequest, "RepoDeactivated", "Repo has been deactivated: %s", did)
}

// ownerOrAdmin reports whether the request comes from the account itself
// (a valid access token) or the admin, who may read a deactivated repo.
func (s *server) ownerOrAdmin(r *http.Request) bool {
	if s.isAdmin(r) {
		return true
	}
	tok, ok := bearer(r)
	if !ok {
		return false
	}
	_, err := s.auth.VerifyAccess(r.Context(), tok)
	return err == nil
}

// requireAvailableRepo answers RepoDeactivated to others' reads of a
// deactivated repository named by the did (sync) or repo (repo.*) param.
func (s *server) requireAvailableRepo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		did := q.Get("did")
		if did == "" {
			did = q.Get("repo")
		}
		if err := s.repoUnavailable(r.Context(), did); err != nil && !s.ownerOrAdmin(r) {
			writeError(w, r, s.log, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// repoStatusFields are the active/status fields of getRepoStatus and
// listRepos.
func (s *server) repoStatusFields(ctx context.Context, out map[string]any) {
	out["active"] = true
	if st, err := s.accounts.Status(ctx); err == nil && st != account.StatusActive && st != "" {
		out["active"] = false
		out["status"] = string(st)
	}
}

var _ io.Reader = (*bodyReader)(nil)
