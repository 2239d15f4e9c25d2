package account

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// Errors of the account lifecycle (migration in and out, deactivation,
// deletion); the api maps them to XRPC errors.
var (
	// ErrAccountActive: an operation that needs a deactivated account
	// (importRepo) on an active one.
	ErrAccountActive = errors.New("account is active: importRepo needs a deactivated account (as after createAccount with an existing DID)")
	// ErrDIDNotReady: activateAccount while the DID document does not yet
	// name this server, its signing key or its rotation key.
	ErrDIDNotReady = errors.New("the DID document does not name this server yet")
	// ErrDIDResolution: the DID's document or current key could not be
	// fetched.
	ErrDIDResolution = errors.New("could not resolve the DID")
	// ErrWrongDID: a deletion or migration naming another DID than the
	// account's.
	ErrWrongDID = errors.New("DID does not match the account")
	// ErrNoTokenStore: no single-use token store is configured.
	ErrNoTokenStore = errors.New("no token store configured")
)

// Lifecycle is the account's identity and status, as the lifecycle
// methods and the API need them together.
type Lifecycle struct {
	DID    syntax.DID
	Handle syntax.Handle
	Status Status
}

// Active reports whether the account is active.
func (l Lifecycle) Active() bool { return l.Status == StatusActive || l.Status == "" }

// Lifecycle returns the account's DID, handle and status, or ErrNoAccount.
func (s *Service) Lifecycle(ctx context.Context) (Lifecycle, error) {
	acct, err := s.Account(ctx)
	if err != nil {
		return Lifecycle{}, err
	}
	st, err := s.Status(ctx)
	if err != nil {
		return Lifecycle{}, err
	}
	return Lifecycle{DID: acct.DID, Handle: acct.Handle, Status: st}, nil
}

// CreateMigrating makes the account for a DID that already exists
// elsewhere (createAccount with did, migration in). The caller has checked
// the DID's service-auth token. The account gets a fresh signing key (the
// one getRecommendedDidCredentials names) and an empty repository without a
// commit, and starts deactivated: no firehose event until activateAccount.
// The handle must be under this server's domains or already resolve to did.
func (s *Service) CreateMigrating(ctx context.Context, did syntax.DID, p CreateParams) (*Account, error) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if s.Exists() {
		return nil, ErrAccountExists
	}
	if did.Method() != "plc" && did.Method() != "web" {
		return nil, fmt.Errorf("%w: unsupported DID method %q", ErrWrongDID, did.Method())
	}
	handle, email, err := s.checkCreate(p)
	if err != nil {
		return nil, err
	}
	if err := identity.HandleAllowed(handle, s.cfg.Hostname, s.cfg.ServiceDomains); err != nil {
		if !errors.Is(err, identity.ErrUnsupportedDomain) {
			return nil, err
		}
		// A handle elsewhere must already point at the DID.
		if s.cfg.Resolver == nil {
			return nil, fmt.Errorf("%w: no resolver configured", ErrHandleNotVerified)
		}
		got, err := s.cfg.Resolver.ResolveHandle(ctx, handle)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHandleNotVerified, err)
		}
		if got != did {
			return nil, fmt.Errorf("%w: %s points to %s", ErrHandleNotVerified, handle, got)
		}
	}
	pw, err := s.auth.HashNewPassword(ctx, p.Password)
	if err != nil {
		return nil, err
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(s.cfg.DataDir, SigningKeyFile), key); err != nil {
		return nil, err
	}
	// Whatever an interrupted creation left is nobody's. The account
	// starts deactivated, without an event, before its credentials make it
	// exist.
	if err := repo.Destroy(s.db); err != nil {
		return nil, err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketServer).Put(keyStatus, []byte(StatusDeactivated))
	}); err != nil {
		return nil, err
	}
	r, err := repo.Open(s.db, did, key, repo.Options{BeforeCommit: s.beforeCommit})
	if err != nil {
		return nil, err
	}
	// An empty, silent first commit, as the reference makes one: clients
	// read repoCommit from checkAccountStatus before the import.
	if _, err := r.Init(ctx); err != nil {
		return nil, err
	}
	acct := Account{DID: did, Handle: handle, Email: email, CreatedAt: time.Now().UTC()}
	if err := s.db.Update(func(tx *bolt.Tx) error { return s.createAccountTx(tx, &acct, pw) }); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.repo, s.key = r, key
	s.mu.Unlock()
	s.cfg.Log.Info("account created for migration (deactivated)", "did", did, "handle", handle)
	return &acct, nil
}

// currentKey resolves the signing key the DID document names now.
func (s *Service) currentKey(ctx context.Context, did syntax.DID) (atcrypto.PublicKey, error) {
	if s.cfg.Resolver == nil {
		return nil, fmt.Errorf("%w: no resolver configured", ErrDIDResolution)
	}
	pub, err := s.cfg.Resolver.SigningKey(ctx, did, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDIDResolution, did, err)
	}
	return pub, nil
}

// ImportRepo replaces the repository of a deactivated account with the CAR
// read from rd (importRepo): its commit must be the account's DID, signed by
// the key the DID document names now; the imported tree is re-signed with
// our key (see repo.ImportCAR). Blob references are rebuilt in the same
// transaction; blobs not uploaded yet are listed by listMissingBlobs. No
// firehose event is sent: the account announces itself at activation.
func (s *Service) ImportRepo(ctx context.Context, rd io.Reader, opts repo.ImportOptions) (*repo.Commit, error) {
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	if st.Status != StatusDeactivated {
		return nil, ErrAccountActive
	}
	r, err := s.Repo()
	if err != nil {
		return nil, err
	}
	pub, err := s.currentKey(ctx, st.DID)
	if err != nil {
		return nil, err
	}
	c, err := r.ImportCAR(ctx, rd, pub, opts)
	if err != nil {
		return nil, err
	}
	s.cfg.Log.Info("repository imported", "did", st.DID, "rev", c.Rev, "imported_rev", c.ImportedRev, "blobs", len(c.Blobs))
	return c, nil
}

// importRefs rebuilds blob references after an import, inside its
// transaction.
func (s *Service) importRefs(tx *bolt.Tx, c *repo.Commit) error {
	changes := make([]blobstore.RefChange, 0, len(c.RecordBlobs))
	for path, blobs := range c.RecordBlobs {
		changes = append(changes, blobstore.RefChange{Path: path, Blobs: blobs})
	}
	return s.blobs.ReplaceRefs(tx, changes)
}

// CheckStatus are the figures of checkAccountStatus.
type CheckStatus struct {
	Activated          bool
	ValidDID           bool
	RepoCommit         string
	RepoRev            string
	RepoBlocks         int
	IndexedRecords     int
	PrivateStateValues int
	ExpectedBlobs      int
	ImportedBlobs      int
}

// CheckAccountStatus counts the account's repository and blobs and checks
// its DID document (checkAccountStatus), as a migrating client polls it.
func (s *Service) CheckAccountStatus(ctx context.Context) (*CheckStatus, error) {
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.Repo()
	if err != nil {
		return nil, err
	}
	rs, err := r.Stats()
	if err != nil {
		return nil, err
	}
	expected, imported, err := s.blobs.Counts(ctx)
	if err != nil {
		return nil, err
	}
	out := &CheckStatus{
		Activated:      st.Active(),
		ValidDID:       s.checkDIDDocument(ctx, st.DID) == nil,
		RepoRev:        rs.Rev,
		RepoBlocks:     rs.Blocks,
		IndexedRecords: rs.Records,
		ExpectedBlobs:  expected,
		ImportedBlobs:  imported,
	}
	// Preferences are the private state this server keeps.
	if prefs, err := s.Preferences(); err == nil {
		out.PrivateStateValues = len(prefs)
	}
	if rs.Commit.Defined() {
		out.RepoCommit = rs.Commit.String()
	}
	return out, nil
}

// checkDIDDocument checks that the DID document names this server as the
// PDS, the account's signing key here, and (did:plc) our rotation key, as
// the reference's activateAccount does.
func (s *Service) checkDIDDocument(ctx context.Context, did syntax.DID) error {
	pub, err := s.PublicKey()
	if err != nil {
		return err
	}
	if s.cfg.Resolver == nil {
		return fmt.Errorf("%w: no resolver configured", ErrDIDResolution)
	}
	id, err := s.cfg.Resolver.ResolveDID(ctx, did, true)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDIDResolution, did, err)
	}
	if ep := id.PDSEndpoint(); strings.TrimSuffix(ep, "/") != strings.TrimSuffix(s.cfg.PublicURL, "/") {
		return fmt.Errorf("%w: its PDS endpoint is %q, not %q", ErrDIDNotReady, ep, s.cfg.PublicURL)
	}
	key, err := id.PublicKey()
	if err != nil || key.DIDKey() != pub.DIDKey() {
		return fmt.Errorf("%w: its atproto signing key is not this server's key for the account (see getRecommendedDidCredentials)", ErrDIDNotReady)
	}
	if did.Method() == "plc" {
		if s.cfg.PLC == nil || s.cfg.RotationKey == nil {
			return fmt.Errorf("%w: no PLC directory or rotation key configured", ErrDIDResolution)
		}
		last, err := s.cfg.PLC.LastOp(ctx, did)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrDIDResolution, did, err)
		}
		rot, err := s.cfg.RotationKey.PublicKey()
		if err != nil {
			return err
		}
		if !slices.Contains(last.RotationKeys, rot.DIDKey()) {
			return fmt.Errorf("%w: its rotation keys do not include this server's", ErrDIDNotReady)
		}
	}
	return nil
}

// ActivateAccount makes a deactivated account active (activateAccount),
// once its DID document names this server: in one transaction it flips the
// status and appends #account (active), #identity (with the handle) and a
// #sync of the head, which the relay verifies against the key the document
// names. Then it asks the relays to crawl. Activating an active account
// changes nothing; a taken-down or deleted one cannot be activated by its
// owner.
func (s *Service) ActivateAccount(ctx context.Context) error {
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return err
	}
	switch st.Status {
	case StatusActive, "":
		return nil
	case StatusDeactivated:
	default:
		return fmt.Errorf("%w: %s to %s", ErrInvalidTransition, st.Status, StatusActive)
	}
	if err := s.checkDIDDocument(ctx, st.DID); err != nil {
		return err
	}
	r, err := s.Repo()
	if err != nil {
		return err
	}
	if _, _, err := r.Head(); errors.Is(err, repo.ErrNoHead) {
		// Nothing was imported: the account starts with an empty
		// repository, whose first commit announces it (#identity,
		// #account, #commit, #sync) like a new account's.
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketServer).Delete(keyStatus) }); err != nil {
			return err
		}
		s.creating = st.Handle
		if _, err := r.Init(ctx); err != nil {
			return err
		}
		s.crawl()
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if cur := statusTx(tx); cur != StatusDeactivated {
			return fmt.Errorf("%w: %s to %s", ErrInvalidTransition, cur, StatusActive)
		}
		if err := tx.Bucket(bucketServer).Put(keyStatus, []byte(StatusActive)); err != nil {
			return err
		}
		ev := s.cfg.Events
		if ev == nil {
			return nil
		}
		if _, err := ev.AppendAccount(tx, st.DID, true, ""); err != nil {
			return err
		}
		if _, err := ev.AppendIdentity(tx, st.DID, st.Handle.String()); err != nil {
			return err
		}
		rev, car, err := repo.HeadSyncTx(tx)
		if err != nil {
			return err
		}
		_, err = ev.AppendSync(tx, st.DID, rev, car)
		return err
	})
	if err != nil {
		return err
	}
	s.cfg.Log.Info("account activated", "did", st.DID)
	s.crawl()
	return nil
}

func (s *Service) crawl() {
	if s.cfg.RequestCrawl != nil {
		s.cfg.RequestCrawl()
	}
}

// DeactivateAccount deactivates the account (deactivateAccount): writes
// are refused and others' reads answer RepoDeactivated until
// ActivateAccount; the status and its #account event (active=false,
// status=deactivated) commit together (Deactivate). deleteAfter is accepted
// as the reference accepts it (a hint; nothing is deleted automatically).
func (s *Service) DeactivateAccount(ctx context.Context, deleteAfter time.Time) error {
	if err := s.Deactivate(ctx); err != nil {
		return err
	}
	s.cfg.Log.Info("account deactivated", "delete_after", deleteAfter)
	return nil
}

// Delete deletes the account (deleteAccount) after checking its password
// and a single-use delete_account token: records, repository, blobs,
// preferences, sessions, app passwords and tokens go in one transaction
// with the #account (status deleted) event; the firehose's earlier events
// are dropped as the reference drops the account's, while the sequence
// number keeps growing. Blob files and the signing key file are removed
// after the commit. The server is then ready for createAccount again.
func (s *Service) Delete(ctx context.Context, did syntax.DID, password, token string) error {
	if s.cfg.Tokens == nil {
		return ErrNoTokenStore
	}
	return s.delete(ctx, did,
		func() error { return s.auth.VerifyAccountPassword(ctx, password) },
		func(tx *bolt.Tx) error { return s.cfg.Tokens.ConsumeTx(tx, auth.PurposeDeleteAccount, token) })
}

// AdminDelete deletes the account as the operator's
// com.atproto.admin.deleteAccount does: no password or token, otherwise
// exactly what Delete does (same transaction, same #account deleted event).
// A DID other than the account's is ErrWrongDID; no account is ErrNoAccount.
func (s *Service) AdminDelete(ctx context.Context, did syntax.DID) error {
	return s.delete(ctx, did, nil, nil)
}

// delete is the deletion shared by Delete and AdminDelete: did must be the
// account's; verify, if set, runs first (the password), then check, if
// set, inside the deletion's transaction (the delete_account token).
func (s *Service) delete(ctx context.Context, did syntax.DID, verify func() error, check func(*bolt.Tx) error) error {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return err
	}
	if did != st.DID {
		return fmt.Errorf("%w: %s", ErrWrongDID, did)
	}
	if verify != nil {
		if err := verify(); err != nil {
			return err
		}
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		if err := s.auth.DeleteCredentialsTx(tx); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAccount).Delete(keyRecord); err != nil {
			return err
		}
		if s.cfg.Tokens != nil {
			if err := s.cfg.Tokens.DeleteAllTx(tx); err != nil {
				return err
			}
		}
		if err := repo.DestroyTx(tx); err != nil {
			return err
		}
		if err := s.blobs.ClearTx(tx); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketPrefs); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		// The next account starts afresh: no status is left behind.
		if err := tx.Bucket(bucketServer).Delete(keyStatus); err != nil {
			return err
		}
		if s.cfg.Events == nil {
			return nil
		}
		seq, err := s.cfg.Events.AppendAccount(tx, did, false, "deleted")
		if err != nil {
			return err
		}
		return s.cfg.Events.DeleteBeforeTx(tx, seq)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.repo, s.key = nil, nil
	s.mu.Unlock()
	if err := s.blobs.RemoveFiles(); err != nil {
		s.cfg.Log.Warn("removing blob files after account deletion", "err", err)
	}
	if err := os.Remove(filepath.Join(s.cfg.DataDir, SigningKeyFile)); err != nil && !os.IsNotExist(err) {
		s.cfg.Log.Warn("removing the signing key after account deletion", "err", err)
	}
	s.cfg.Log.Info("account deleted", "did", did)
	return nil
}
