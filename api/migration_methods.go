package api

import (
	"context"
	"encoding/json"
	"errors"
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
func (s *server) createMigratingAccount(ctx context.Context, in *createAccountInput) (*createAccountOutput, error) {
	if in.PLCOp != nil {
		return nil, invalidRequest("plcOp is not supported: bring the DID with a service-auth token instead")
	}
	did, err := syntax.ParseDID(in.DID)
	if err != nil {
		return nil, invalidRequest("Invalid did: %v", err)
	}
	tok, ok := bearer(requestOf(ctx))
	if !ok {
		return nil, xerr(http.StatusUnauthorized, "AuthMissing", "a service-auth token from %s is required to create an account with an existing DID", did)
	}
	if s.resolver == nil {
		return nil, invalidRequest("this server cannot resolve DIDs")
	}
	keys := func(ctx context.Context, d syntax.DID, refresh bool) (atcrypto.PublicKey, error) {
		return s.resolver.SigningKey(ctx, d, refresh)
	}
	iss, err := auth.VerifyServiceJWT(ctx, tok, s.cfg.ServiceDID, "com.atproto.server.createAccount", keys, time.Now())
	if err != nil {
		return nil, err
	}
	if iss != did {
		return nil, xerr(http.StatusUnauthorized, "AuthRequired", "the service-auth token was issued by %s, not %s", iss, did)
	}
	acct, err := s.accounts.CreateMigrating(ctx, did, account.CreateParams{Handle: in.Handle, Email: in.Email, Password: in.Password})
	if err != nil {
		return nil, err
	}
	sess, err := s.auth.Login(ctx, acct.DID.String(), in.Password)
	if err != nil {
		return nil, err
	}
	return &createAccountOutput{AccessJWT: sess.AccessJWT, RefreshJWT: sess.RefreshJWT, Handle: sess.Handle.String(), DID: sess.DID.String()}, nil
}

// importRepo takes the repository as a CAR body.
func (s *server) importRepo(ctx context.Context, in *rawBody) (*noOutput, error) {
	if ct := in.ContentType; ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != carContentType && mt != "application/octet-stream") {
			return nil, invalidRequest("Wrong request encoding (Content-Type): %s, want %s", ct, carContentType)
		}
	}
	limit := s.cfg.MaxImportBytes
	if limit <= 0 {
		limit = DefaultMaxImportBytes
	}
	tooLarge := xerr(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "the CAR is over %d bytes", limit)
	if in.Length > limit {
		return nil, tooLarge
	}
	body := &bodyReader{r: in.limit(limit)}
	c, err := s.accounts.ImportRepo(ctx, body, repo.ImportOptions{MaxBytes: limit})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, err
	}
	responseHeader(ctx).Set("Atproto-Repo-Rev", c.Rev)
	return nil, nil
}

type listMissingBlobsParams struct{ Page pageParams }

type missingBlob struct {
	CID       string `json:"cid"`
	RecordURI string `json:"recordUri"`
}

type listMissingBlobsOutput struct {
	Cursor string        `json:"cursor,omitempty"`
	Blobs  []missingBlob `json:"blobs"`
}

func (s *server) listMissingBlobs(ctx context.Context, p *listMissingBlobsParams) (*listMissingBlobsOutput, error) {
	st, err := s.accounts.Lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	missing, next, err := s.blobs.ListMissing(ctx, p.Page.Cursor, p.Page.Limit)
	if err != nil {
		return nil, err
	}
	out := &listMissingBlobsOutput{Cursor: next, Blobs: make([]missingBlob, 0, len(missing))}
	for _, m := range missing {
		out.Blobs = append(out.Blobs, missingBlob{CID: m.CID.String(), RecordURI: "at://" + st.DID.String() + "/" + m.Path})
	}
	return out, nil
}

type checkAccountStatusOutput struct {
	Activated          bool   `json:"activated"`
	ValidDID           bool   `json:"validDid"`
	RepoCommit         string `json:"repoCommit"`
	RepoRev            string `json:"repoRev"`
	RepoBlocks         int    `json:"repoBlocks"`
	IndexedRecords     int    `json:"indexedRecords"`
	PrivateStateValues int    `json:"privateStateValues"`
	ExpectedBlobs      int    `json:"expectedBlobs"`
	ImportedBlobs      int    `json:"importedBlobs"`
}

func (s *server) checkAccountStatus(ctx context.Context, _ *noParams) (*checkAccountStatusOutput, error) {
	cs, err := s.accounts.CheckAccountStatus(ctx)
	if err != nil {
		return nil, err
	}
	return &checkAccountStatusOutput{
		Activated:          cs.Activated,
		ValidDID:           cs.ValidDID,
		RepoCommit:         cs.RepoCommit,
		RepoRev:            cs.RepoRev,
		RepoBlocks:         cs.RepoBlocks,
		IndexedRecords:     cs.IndexedRecords,
		PrivateStateValues: cs.PrivateStateValues,
		ExpectedBlobs:      cs.ExpectedBlobs,
		ImportedBlobs:      cs.ImportedBlobs,
	}, nil
}

func (s *server) activateAccount(ctx context.Context) (*noOutput, error) {
	return nil, s.accounts.ActivateAccount(ctx)
}

// deactivateAccountInput is optional: a POST without a body deactivates
// with no deletion date.
type deactivateAccountInput struct {
	DeleteAfter string `json:"deleteAfter"`
}

func (deactivateAccountInput) bodyOptional() {}

func (s *server) deactivateAccount(ctx context.Context, in *deactivateAccountInput) (*noOutput, error) {
	var after time.Time
	if in.DeleteAfter != "" {
		dt, err := syntax.ParseDatetimeLenient(in.DeleteAfter)
		if err != nil {
			return nil, invalidRequest("Invalid deleteAfter: %v", err)
		}
		after = dt.Time()
	}
	return nil, s.accounts.DeactivateAccount(ctx, after)
}

type deleteAccountInput struct {
	DID      string `json:"did"`
	Password string `json:"password"`
	Token    string `json:"token"`
}

func (s *server) deleteAccount(ctx context.Context, in *deleteAccountInput) (*noOutput, error) {
	did, err := syntax.ParseDID(in.DID)
	if err != nil || in.Password == "" || in.Token == "" {
		return nil, invalidRequest("did, password and token are required")
	}
	if err := rateLimit(responseHeader(ctx), limitCheck{s.loginIP, s.clientIP(requestOf(ctx))}); err != nil {
		return nil, err
	}
	if err := s.accounts.Delete(ctx, did, in.Password, in.Token); err != nil {
		if errors.Is(err, auth.ErrInvalidLogin) || errors.Is(err, account.ErrWrongDID) || errors.Is(err, account.ErrNoAccount) {
			err = xerr(http.StatusUnauthorized, "AuthRequired", "Invalid did or password")
		}
		return nil, err
	}
	return nil, nil
}

type signPlcOperationInput struct {
	Token               string                      `json:"token"`
	RotationKeys        []string                    `json:"rotationKeys"`
	AlsoKnownAs         []string                    `json:"alsoKnownAs"`
	VerificationMethods map[string]string           `json:"verificationMethods"`
	Services            map[string]didplc.OpService `json:"services"`
}

type signPlcOperationOutput struct {
	Operation *didplc.RegularOp `json:"operation"`
}

func (s *server) signPlcOperation(ctx context.Context, in *signPlcOperationInput) (*signPlcOperationOutput, error) {
	if in.Token == "" {
		return nil, invalidRequest("email confirmation token required to sign PLC operations")
	}
	op, err := s.accounts.SignPLCOperation(ctx, in.Token, identity.PLCChanges{
		RotationKeys: in.RotationKeys, AlsoKnownAs: in.AlsoKnownAs,
		VerificationMethods: in.VerificationMethods, Services: in.Services,
	})
	if err != nil {
		return nil, err
	}
	return &signPlcOperationOutput{Operation: op}, nil
}

type submitPlcOperationInput struct {
	Operation json.RawMessage `json:"operation"`
}

func (s *server) submitPlcOperation(ctx context.Context, in *submitPlcOperationInput) (*noOutput, error) {
	var op didplc.RegularOp
	if len(in.Operation) == 0 || json.Unmarshal(in.Operation, &op) != nil {
		return nil, invalidRequest("operation must be a signed plc_operation object")
	}
	return nil, s.accounts.SubmitPLCOperation(ctx, &op)
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
func (s *server) repoStatusFields(ctx context.Context, out *repoStatus) {
	out.Active = true
	if st, err := s.accounts.Status(ctx); err == nil && st != account.StatusActive && st != "" {
		out.Active = false
		out.Status = string(st)
	}
}
