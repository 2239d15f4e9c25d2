// Package account owns the server's one account: its record (DID, handle,
// email and whether it is confirmed, record.go), its status and the rules
// that depend on it (status.go), its lifecycle (creation, migration in and
// out, deactivation, deletion), and ties together its parts: signing key,
// repository, credentials (auth) and blob references. It creates the
// account once and opens it on every start.
package account

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/repo"
	bolt "go.etcd.io/bbolt"
)

// Errors of account creation; the api maps them to XRPC errors. An invalid
// handle is identity.ErrInvalidHandle (the handle rules are identity's).
var (
	ErrNoAccount         = errors.New("no account exists on this server")
	ErrAccountExists     = errors.New("this server hosts one account, and it exists")
	ErrInvalidInviteCode = errors.New("invalid invite code")
	ErrInvalidEmail      = errors.New("invalid email")
	ErrDIDCreation       = errors.New("could not create the DID")
)

// SigningKeyFile is the repo signing key's file in the data directory: the
// K-256 private key as hex, mode 0600.
const SigningKeyFile = "repo-signing-key.hex"

var (
	bucketServer = []byte("server_meta")
	keyInvite    = []byte("invite_code")
)

// DIDMethod selects how the account's DID is made.
type DIDMethod string

// The supported DID methods.
const (
	DIDPLC DIDMethod = "plc"
	DIDWeb DIDMethod = "web"
)

// Config is what account creation needs to know about the server.
type Config struct {
	DataDir        string
	Hostname       string
	PublicURL      string // the PDS endpoint written in the DID document
	ServiceDomains []string
	DIDMethod      DIDMethod
	PLC            *identity.PLCClient
	RotationKey    atcrypto.PrivateKey // signs PLC operations
	Log            *slog.Logger
	// Resolver verifies handles outside the server's domains.
	Resolver *identity.Resolver
	// Events, if set, receives the firehose events of every write, in the
	// write's transaction.
	Events *events.Sequencer
	// Tokens are the single-use tokens of signPlcOperation and
	// deleteAccount.
	Tokens *auth.EmailTokens
	// RequestCrawl, if set, asks the relays to crawl now (activation).
	RequestCrawl func()
}

// Service is the account of this server, if it exists.
type Service struct {
	db    *bolt.DB
	auth  *auth.Store
	blobs *blobstore.Store
	cfg   Config

	mu   sync.RWMutex // guards repo and key, set once at creation
	repo *repo.Repo
	key  atcrypto.PrivateKeyExportable

	createMu sync.Mutex // one creation at a time
	// creating is the handle of the account being created, for the
	// #identity event of its first commit.
	creating syntax.Handle
}

// Open loads the existing account, if any. A missing or unreadable signing
// key for an existing account is an error: the repository cannot be signed.
func Open(ctx context.Context, db *bolt.DB, a *auth.Store, blobs *blobstore.Store, cfg Config) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{db: db, auth: a, blobs: blobs, cfg: cfg}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketServer, bucketAccount} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return s.migrateLegacyTx(tx)
	}); err != nil {
		return nil, err
	}
	acct, err := s.Account(ctx)
	if errors.Is(err, ErrNoAccount) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := readKey(filepath.Join(cfg.DataDir, SigningKeyFile))
	if err != nil {
		return nil, fmt.Errorf("account %s exists but its signing key cannot be read: %w", acct.DID, err)
	}
	r, err := repo.Open(db, acct.DID, key, repo.Options{BeforeCommit: s.beforeCommit})
	if err != nil {
		return nil, err
	}
	s.repo, s.key = r, key
	return s, nil
}

// beforeCommit keeps blob references in the repository's transaction, so a
// record never points at a blob the store may collect.
//
// It is also the one home of "no writes while not active": the status is
// read in the commit's own transaction, so no write slips past a
// concurrent Deactivate or Takedown.
func (s *Service) beforeCommit(tx *bolt.Tx, c *repo.Commit) error {
	action := ActionWrite
	if c.Sync {
		action = ActionImport
	}
	if !c.Sync && c.Since == nil && len(c.Ops) == 0 && statusTx(tx) == StatusDeactivated {
		// The empty first commit of an account migrating in: it gives
		// checkAccountStatus and sync a head until the import, and is
		// announced by nobody (the account is not active yet).
		return nil
	}
	if err := statusTx(tx).Allows(action); err != nil {
		return err
	}
	if c.Sync {
		// An imported repository (a deactivated account migrating in): its
		// blobs arrive after it, so references are rebuilt with the missing
		// ones remembered. No event: activation announces the new head.
		return s.importRefs(tx, c)
	}
	changes := make([]blobstore.RefChange, len(c.Ops))
	for i, op := range c.Ops {
		changes[i] = blobstore.RefChange{Path: op.Path(), Blobs: op.Blobs}
	}
	if err := s.blobs.UpdateRefs(tx, changes); err != nil {
		return err
	}
	ev := s.cfg.Events
	if ev == nil {
		return nil
	}
	// The first commit comes with the account: announce the identity and
	// the active account before it, and a #sync after it, as the reference
	// does at account creation.
	first := c.Since == nil
	if first {
		if _, err := ev.AppendIdentity(tx, c.DID, s.creating.String()); err != nil {
			return err
		}
		if _, err := ev.AppendAccount(tx, c.DID, true, ""); err != nil {
			return err
		}
	}
	if _, err := ev.AppendCommit(tx, c); err != nil {
		return err
	}
	if first {
		if _, err := ev.AppendSync(tx, c.DID, c.Rev, c.SyncCAR()); err != nil {
			return err
		}
	}
	return nil
}

// Repo returns the account's repository, or ErrNoAccount.
func (s *Service) Repo() (*repo.Repo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.repo == nil {
		return nil, ErrNoAccount
	}
	return s.repo, nil
}

// SigningKey returns the repo signing key, or ErrNoAccount.
func (s *Service) SigningKey() (atcrypto.PrivateKey, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.key == nil {
		return nil, ErrNoAccount
	}
	return s.key, nil
}

// PublicKey returns the repo signing key's public half, or ErrNoAccount.
func (s *Service) PublicKey() (atcrypto.PublicKey, error) {
	k, err := s.SigningKey()
	if err != nil {
		return nil, err
	}
	return k.PublicKey()
}

// Exists reports whether the account has been created.
func (s *Service) Exists() bool {
	_, err := s.Repo()
	return err == nil
}

// CreateParams are the inputs of account creation.
type CreateParams struct {
	Handle   string
	Email    string
	Password string
}

// Create makes the account: a signing key, the DID (a PLC genesis operation
// submitted to the directory, or did:web of the hostname), the first commit
// and the credentials. The account exists once its credentials are stored,
// the last step; an interrupted creation can be retried.
func (s *Service) Create(ctx context.Context, p CreateParams) (*Account, *repo.Commit, error) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if s.Exists() {
		return nil, nil, ErrAccountExists
	}
	handle, email, err := s.checkCreate(p)
	if err != nil {
		return nil, nil, err
	}
	if err := identity.HandleAllowed(handle, s.cfg.Hostname, s.cfg.ServiceDomains); err != nil {
		return nil, nil, err
	}
	pw, err := s.auth.HashNewPassword(ctx, p.Password)
	if err != nil {
		return nil, nil, err
	}
	key, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		return nil, nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, nil, err
	}
	var did syntax.DID
	switch s.cfg.DIDMethod {
	case DIDWeb:
		if did, err = identity.DIDWeb(s.cfg.Hostname); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDIDCreation, err)
		}
	default:
		if s.cfg.RotationKey == nil || s.cfg.PLC == nil {
			return nil, nil, fmt.Errorf("%w: no PLC rotation key or directory configured", ErrDIDCreation)
		}
		d, op, err := identity.PLCGenesis(s.cfg.RotationKey, pub, handle, s.cfg.PublicURL)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDIDCreation, err)
		}
		if err := s.cfg.PLC.Submit(ctx, d, op); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDIDCreation, err)
		}
		did = d
	}
	if err := writeKey(filepath.Join(s.cfg.DataDir, SigningKeyFile), key); err != nil {
		return nil, nil, err
	}
	r, err := repo.Open(s.db, did, key, repo.Options{BeforeCommit: s.beforeCommit})
	if errors.Is(err, repo.ErrWrongRepo) {
		// Left by an interrupted creation of another DID: no account owns it.
		if err = repo.Destroy(s.db); err == nil {
			r, err = repo.Open(s.db, did, key, repo.Options{BeforeCommit: s.beforeCommit})
		}
	}
	if err != nil {
		return nil, nil, err
	}
	s.creating = handle
	first, err := r.Init(ctx)
	if err != nil {
		return nil, nil, err
	}
	acct := Account{DID: did, Handle: handle, Email: email, CreatedAt: time.Now().UTC()}
	if err := s.db.Update(func(tx *bolt.Tx) error { return s.createAccountTx(tx, &acct, pw) }); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.repo, s.key = r, key
	s.mu.Unlock()
	s.cfg.Log.Info("account created", "did", did, "handle", handle)
	return &acct, first, nil
}

// checkCreate checks the handle's syntax and the email of a new account
// and returns them normalized (lowercased; email "" when none is given).
// Where the handle may live is checked by the caller.
func (s *Service) checkCreate(p CreateParams) (syntax.Handle, string, error) {
	handle, err := syntax.ParseHandle(strings.ToLower(strings.TrimSpace(p.Handle)))
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", identity.ErrInvalidHandle, err)
	}
	email := ""
	if p.Email != "" {
		if email, err = NormalizeEmail(p.Email); err != nil {
			return "", "", err
		}
	}
	return handle.Normalize(), email, nil
}

// InviteCode returns the server's invite code for account creation, making
// one if there is none. It serves only while no account exists.
func (s *Service) InviteCode() (string, error) {
	var code string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketServer)
		if v := b.Get(keyInvite); v != nil {
			code = string(v)
			return nil
		}
		var raw [10]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return err
		}
		h := strings.ReplaceAll(s.cfg.Hostname, ".", "-")
		x := hex.EncodeToString(raw[:])
		code = h + "-" + x[:5] + "-" + x[5:10]
		return b.Put(keyInvite, []byte(code))
	})
	return code, err
}

// CheckInviteCode reports whether code is the server's invite code.
func (s *Service) CheckInviteCode(code string) error {
	var ok bool
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketServer).Get(keyInvite)
		ok = v != nil && code != "" && subtleEq(string(v), code)
		return nil
	})
	if !ok {
		return ErrInvalidInviteCode
	}
	return nil
}

func readKey(path string) (atcrypto.PrivateKeyExportable, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not hex: %w", path, err)
	}
	return atcrypto.ParsePrivateBytesK256(raw)
}

// writeKey stores the key as hex, 0600, fsynced and renamed into place.
func writeKey(path string, key atcrypto.PrivateKeyExportable) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(hex.EncodeToString(key.Bytes()) + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
