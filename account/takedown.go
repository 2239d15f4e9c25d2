package account

import (
	"encoding/json"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Takedowns of single records and blobs by the operator
// (com.atproto.admin.updateSubjectStatus), kept as the reference keeps them:
// the record stays in the repository and on the firehose, but getRecord and
// listRecords no longer serve it; the blob's bytes stay on disk, but getBlob
// answers BlobNotFound. Reversing a takedown serves them again.

var bucketTakedowns = []byte("admin_takedowns") // "record:<at-uri>" | "blob:<cid>" | "account" → subjectRecord

// SubjectStatus is the takedown state of a subject and its reference (the
// operator's note, e.g. a ticket number).
type SubjectStatus struct {
	Applied bool   `json:"applied"`
	Ref     string `json:"ref,omitempty"`
	// CID is the record's CID when it was taken down (strongRef).
	CID string `json:"cid,omitempty"`
}

// MaxTakedownRef bounds a takedown reference.
const MaxTakedownRef = 1024

func takedownKey(kind, id string) []byte { return []byte(kind + ":" + id) }

func (s *Service) setTakedown(key []byte, st SubjectStatus) error {
	if len(st.Ref) > MaxTakedownRef {
		return fmt.Errorf("%w: takedown ref longer than %d bytes", ErrInvalidSubject, MaxTakedownRef)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketTakedowns)
		if err != nil {
			return err
		}
		if !st.Applied {
			return b.Delete(key)
		}
		v, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
}

func (s *Service) takedown(key []byte) SubjectStatus {
	var st SubjectStatus
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTakedowns)
		if b == nil {
			return nil
		}
		if v := b.Get(key); v != nil && json.Unmarshal(v, &st) == nil {
			st.Applied = true
		}
		return nil
	})
	return st
}

// ErrInvalidSubject: an updateSubjectStatus subject this server does not
// host or cannot parse.
var ErrInvalidSubject = fmt.Errorf("invalid subject")

// SetRecordTakedown records the takedown state of the record at uri.
func (s *Service) SetRecordTakedown(uri string, st SubjectStatus) error {
	return s.setTakedown(takedownKey("record", uri), st)
}

// RecordTakedown is the takedown state of the record at uri.
func (s *Service) RecordTakedown(uri string) SubjectStatus {
	return s.takedown(takedownKey("record", uri))
}

// SetBlobTakedown records the takedown state of the blob cid.
func (s *Service) SetBlobTakedown(cid string, st SubjectStatus) error {
	return s.setTakedown(takedownKey("blob", cid), st)
}

// BlobTakedown is the takedown state of the blob cid.
func (s *Service) BlobTakedown(cid string) SubjectStatus {
	return s.takedown(takedownKey("blob", cid))
}

// SetAccountTakedownRef keeps the reference of an account takedown (the
// status itself is the account's Status); empty clears it.
func (s *Service) SetAccountTakedownRef(ref string) error {
	return s.setTakedown([]byte("account"), SubjectStatus{Applied: ref != "", Ref: ref})
}

// AccountTakedownRef is the reference of the account's takedown.
func (s *Service) AccountTakedownRef() string {
	return s.takedown([]byte("account")).Ref
}

// RecordTakedownsUnder reports, for listRecords, whether any record of the
// collection at prefix ("at://did/collection/") is taken down, so that the
// common case costs one seek.
func (s *Service) RecordTakedownsUnder(prefix string) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTakedowns)
		if b == nil {
			return nil
		}
		k, _ := b.Cursor().Seek(takedownKey("record", prefix))
		found = k != nil && strings.HasPrefix(string(k), "record:"+prefix)
		return nil
	})
	return found
}
