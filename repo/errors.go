package repo

import "errors"

// Errors returned by the repository. The api package maps each to one XRPC
// error; wrapped errors carry the detail for the message.
var (
	// ErrInvalidWrite: a malformed batch (no writes, more than MaxWrites,
	// duplicate paths, bad collection or record key, unknown action).
	ErrInvalidWrite = errors.New("invalid write")
	// ErrInvalidRecord: a record that is not valid atproto data, lacks a
	// $type matching its collection, or is over MaxRecordBytes.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrRecordExists: a create at a path that already holds a record.
	ErrRecordExists = errors.New("record already exists")
	// ErrRecordNotFound: an update, delete or read of an absent record.
	ErrRecordNotFound = errors.New("record not found")
	// ErrInvalidSwap: swapCommit or swapRecord did not match the current state.
	ErrInvalidSwap = errors.New("swap mismatch")
	// ErrNoHead: the repository has no commit yet.
	ErrNoHead = errors.New("repository has no commit")
	// ErrWrongRepo: the bbolt file holds the repository of another DID.
	ErrWrongRepo = errors.New("database holds another repository")
	// ErrInvalidCAR: an imported CAR is malformed, unsigned, or inconsistent.
	ErrInvalidCAR = errors.New("invalid repository CAR")
	// ErrCorrupt: stored data is inconsistent (a missing or malformed block).
	ErrCorrupt = errors.New("repository storage is corrupt")
)
