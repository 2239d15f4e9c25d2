package blobstore

import "errors"

// Errors returned by the blob store. The api package maps each to one XRPC
// error; wrapped errors carry the detail (usually the CID) for the message.
var (
	// ErrTooLarge: an upload is longer than Config.MaxSize. Nothing is kept.
	ErrTooLarge = errors.New("blob too large")
	// ErrNotFound: Stat or Open of a CID the store does not hold.
	ErrNotFound = errors.New("blob not found")
	// ErrBlobNotFound: a record references a blob that was never uploaded
	// (or was already garbage-collected). Returned, wrapped with the CID, by
	// UpdateRefs, which aborts the repository write.
	ErrBlobNotFound = errors.New("referenced blob was never uploaded")
	// ErrCorrupt: stored metadata is malformed or a bucket is missing.
	ErrCorrupt = errors.New("blob store metadata is corrupt")
)
