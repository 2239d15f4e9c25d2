// Package plcdir is a small did:plc directory for local development: the
// HTTP API of plc.directory (submit an operation, resolve a document, read
// the operation log, the audit log and the current data) over its own bbolt
// file. `pds dev` runs it in the same process as the PDS, so that accounts
// can be created with no internet and nothing reaches the public directory.
//
// Operations are checked as the public directory checks them: the whole log
// with the new operation appended must pass go-didplc's VerifyOpLog
// (genesis DID, signatures by the allowed rotation keys, no update after a
// tombstone). Forks (an operation whose prev is not the newest one, which
// the public directory accepts within 72 hours to nullify a newer one) are
// refused: a development directory does not need key recovery.
package plcdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
	bolt "go.etcd.io/bbolt"
)

// bucketLog maps a DID to the JSON array of its log entries, oldest first.
var bucketLog = []byte("plc_log")

// MaxOpSize bounds a submitted operation's JSON body.
const MaxOpSize = 64 << 10

// maxLogLen bounds the operations one DID may accumulate (the public
// directory rate-limits updates; a development directory only bounds them).
const maxLogLen = 1000

// Errors a submission can fail with; the HTTP API answers 400 with the message.
var (
	errInvalidOp    = errors.New("invalid operation")
	errNotGenesis   = errors.New("the first operation of a DID must be its genesis")
	errFork         = errors.New("prev is not the newest operation (forks are not supported here)")
	errNotFound     = errors.New("DID not registered")
	errTombstoned   = errors.New("DID not available (tombstoned)")
	errLogTooLong   = errors.New("too many operations for this DID")
	errDIDMismatch  = errors.New("the DID does not match the genesis operation")
	errUnsupportedT = errors.New("legacy \"create\" operations are not accepted")
)

// Directory is a did:plc directory over a bbolt database. Its methods are
// safe for concurrent use.
type Directory struct {
	db  *bolt.DB
	now func() time.Time
}

// Open returns a directory over db (its bucket is created if missing). The
// caller owns db. now may be nil (time.Now).
func Open(db *bolt.DB, now func() time.Time) (*Directory, error) {
	if now == nil {
		now = time.Now
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketLog)
		return err
	}); err != nil {
		return nil, fmt.Errorf("plcdir: %w", err)
	}
	return &Directory{db: db, now: now}, nil
}

func readLog(tx *bolt.Tx, did string) ([]didplc.LogEntry, error) {
	v := tx.Bucket(bucketLog).Get([]byte(did))
	if v == nil {
		return nil, nil
	}
	var entries []didplc.LogEntry
	if err := json.Unmarshal(v, &entries); err != nil {
		return nil, fmt.Errorf("plcdir: stored log of %s: %w", did, err)
	}
	return entries, nil
}

// Submit validates op as the next operation of did and appends it.
func (d *Directory) Submit(did string, op didplc.OpEnum) error {
	if _, err := syntax.ParseDID(did); err != nil || !strings.HasPrefix(did, "did:plc:") {
		return fmt.Errorf("%w: %q is not a did:plc", errInvalidOp, did)
	}
	o := op.AsOperation()
	if o == nil {
		return fmt.Errorf("%w: empty operation", errInvalidOp)
	}
	if op.Legacy != nil {
		return fmt.Errorf("%w: %w", errInvalidOp, errUnsupportedT)
	}
	if op.Regular != nil {
		if _, err := op.Regular.Doc(did); err != nil {
			return fmt.Errorf("%w: %w", errInvalidOp, err)
		}
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		entries, err := readLog(tx, did)
		if err != nil {
			return err
		}
		switch {
		case len(entries) == 0 && !o.IsGenesis():
			return errNotGenesis
		case len(entries) == 0:
			computed, err := o.DID()
			if err != nil {
				return fmt.Errorf("%w: %w", errInvalidOp, err)
			}
			if computed != did {
				return fmt.Errorf("%w: %w (%s)", errInvalidOp, errDIDMismatch, computed)
			}
		case len(entries) >= maxLogLen:
			return errLogTooLong
		case o.PrevCIDStr() != entries[len(entries)-1].CID:
			return errFork
		}
		entry := didplc.LogEntry{
			DID:       did,
			Operation: op,
			CID:       o.CID().String(),
			CreatedAt: d.now().UTC().Format("2006-01-02T15:04:05.000Z"),
		}
		entries = append(entries, entry)
		if err := didplc.VerifyOpLog(entries); err != nil {
			return fmt.Errorf("%w: %w", errInvalidOp, err)
		}
		v, err := json.Marshal(entries)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketLog).Put([]byte(did), v)
	})
}

// AuditLog returns every operation of did with its CID and time, oldest
// first; errNotFound when the DID is unknown.
func (d *Directory) AuditLog(did string) ([]didplc.LogEntry, error) {
	var entries []didplc.LogEntry
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		entries, err = readLog(tx, did)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: %s", errNotFound, did)
	}
	return entries, nil
}

// Doc is a DID document as plc.directory serves it.
type Doc struct {
	Context []string `json:"@context"`
	didplc.Doc
}

var docContext = []string{
	"https://www.w3.org/ns/did/v1",
	"https://w3id.org/security/multikey/v1",
	"https://w3id.org/security/suites/secp256k1-2019/v1",
}

// Resolve returns the current DID document of did: errNotFound when the DID
// is unknown, errTombstoned when it was deleted.
func (d *Directory) Resolve(did string) (*Doc, error) {
	last, err := d.last(did)
	if err != nil {
		return nil, err
	}
	doc, err := last.Operation.AsOperation().Doc(did)
	if err != nil {
		return nil, err
	}
	return &Doc{Context: docContext, Doc: doc}, nil
}

func (d *Directory) last(did string) (*didplc.LogEntry, error) {
	entries, err := d.AuditLog(did)
	if err != nil {
		return nil, err
	}
	last := entries[len(entries)-1]
	if last.Operation.Tombstone != nil {
		return nil, fmt.Errorf("%w: %s", errTombstoned, did)
	}
	return &last, nil
}

// Handler serves the directory's HTTP API:
//
//	POST /{did}            submit an operation (JSON), 200 with an empty body
//	GET  /{did}            the DID document
//	GET  /{did}/log        the operations, oldest first
//	GET  /{did}/log/audit  the log entries (did, operation, cid, nullified, createdAt)
//	GET  /{did}/log/last   the newest operation
//	GET  /{did}/data       the current state (rotationKeys, verificationMethods, alsoKnownAs, services)
//	GET  /_health          {"version": "..."}
//
// Errors are JSON {"message": "..."} with status 400, 404 or 410, as the
// public directory answers.
func (d *Directory) Handler() http.Handler {
	return http.HandlerFunc(d.serveHTTP)
}

func writeJSON(w http.ResponseWriter, status int, ctype string, v any) {
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	switch {
	case errors.Is(err, errNotFound):
		status = http.StatusNotFound
	case errors.Is(err, errTombstoned):
		status = http.StatusGone
	case errors.Is(err, errInvalidOp), errors.Is(err, errNotGenesis), errors.Is(err, errFork), errors.Is(err, errLogTooLong):
	default:
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, "application/json", map[string]string{"message": err.Error()})
}

func (d *Directory) serveHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	if path == "_health" {
		writeJSON(w, 200, "application/json", map[string]string{"version": "pds-dev-plc"})
		return
	}
	did, tail, _ := strings.Cut(path, "/")
	if _, err := syntax.ParseDID(did); err != nil || !strings.HasPrefix(did, "did:plc:") {
		fail(w, fmt.Errorf("%w: %q", errNotFound, did))
		return
	}
	switch {
	case r.Method == http.MethodPost && tail == "":
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOpSize))
		if err != nil {
			fail(w, fmt.Errorf("%w: reading the body: %w", errInvalidOp, err))
			return
		}
		var op didplc.OpEnum
		if err := json.Unmarshal(body, &op); err != nil {
			fail(w, fmt.Errorf("%w: %w", errInvalidOp, err))
			return
		}
		if err := d.Submit(did, op); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		d.get(w, did, tail)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeJSON(w, http.StatusMethodNotAllowed, "application/json", map[string]string{"message": "method not allowed"})
	}
}

func (d *Directory) get(w http.ResponseWriter, did, tail string) {
	switch tail {
	case "":
		doc, err := d.Resolve(did)
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, 200, "application/did+ld+json", doc)
	case "log", "log/audit":
		entries, err := d.AuditLog(did)
		if err != nil {
			fail(w, err)
			return
		}
		if tail == "log/audit" {
			writeJSON(w, 200, "application/json", entries)
			return
		}
		ops := make([]didplc.OpEnum, len(entries))
		for i, e := range entries {
			ops[i] = e.Operation
		}
		writeJSON(w, 200, "application/json", ops)
	case "log/last":
		entries, err := d.AuditLog(did)
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, 200, "application/json", entries[len(entries)-1].Operation)
	case "data":
		last, err := d.last(did)
		if err != nil {
			fail(w, err)
			return
		}
		op := last.Operation.Regular
		writeJSON(w, 200, "application/json", map[string]any{
			"did":                 did,
			"rotationKeys":        op.RotationKeys,
			"verificationMethods": op.VerificationMethods,
			"alsoKnownAs":         op.AlsoKnownAs,
			"services":            op.Services,
		})
	default:
		fail(w, fmt.Errorf("%w: no such path", errNotFound))
	}
}
