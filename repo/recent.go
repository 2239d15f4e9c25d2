package repo

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// The recent_writes bucket keeps, for the last recentWrites commits, the
// paths they created or updated: key rev | path, empty value. It serves
// read-after-write (records newer than the AppView has indexed) without a
// full index of record revs.
const recentWrites = 2000

// recentPruneEvery spaces out trimming the log: one bucket scan and a batch
// of deletes every so many commits instead of both on every commit.
const recentPruneEvery = 256

// noteRecent records the created and updated paths of a commit; with prune,
// it also drops the oldest entries beyond the last recentWrites.
func noteRecent(tx *bolt.Tx, rev string, ops []Op, prune bool) error {
	b := tx.Bucket(bucketRecent)
	for _, op := range ops {
		if op.Action == ActionDelete {
			continue
		}
		if err := b.Put([]byte(rev+op.Path()), nil); err != nil {
			return err
		}
	}
	if !prune {
		return nil
	}
	if n := b.Stats().KeyN; n > recentWrites {
		c := b.Cursor()
		var old [][]byte
		for k, _ := c.First(); k != nil && len(old) < n-recentWrites; k, _ = c.Next() {
			old = append(old, bytes.Clone(k))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// RecentRecord is a record written after some rev.
type RecentRecord struct {
	Record
	Rev string
}

// RecordsSince returns, newest first, up to limit records of the given
// collections created or updated in commits after rev that are still
// current (not deleted or replaced since). It only knows the last few
// thousand writes; ok is false when rev is older than that horizon, so the
// caller can tell "nothing newer" from "cannot tell".
func (r *Repo) RecordsSince(rev string, collections []syntax.NSID, limit int) (recs []RecentRecord, ok bool, err error) {
	err = r.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecent)
		c := b.Cursor()
		first, _ := c.First()
		// The horizon: everything after rev is known only if the oldest kept
		// entry is at or before rev, or the log holds everything ever written.
		ok = first == nil || string(first[:revLen]) <= rev || b.Stats().KeyN < recentWrites
		seen := map[string]bool{}
		records := tx.Bucket(bucketRecords)
		for k, _ := c.Last(); k != nil && len(recs) < limit; k, _ = c.Prev() {
			if len(k) <= revLen {
				return fmt.Errorf("%w: recent write key", ErrCorrupt)
			}
			kr, path := string(k[:revLen]), string(k[revLen:])
			if kr <= rev {
				break
			}
			if seen[path] {
				continue
			}
			seen[path] = true
			coll, rkey, err := syntax.ParseRepoPath(path)
			if err != nil {
				return fmt.Errorf("%w: recent write path %q", ErrCorrupt, path)
			}
			if !containsNSID(collections, coll) {
				continue
			}
			v := records.Get([]byte(path))
			if v == nil {
				continue // deleted since
			}
			rec, err := loadRecord(tx, coll, rkey, v)
			if err != nil {
				return err
			}
			// A later write of the same path would have been seen first; this
			// is the current value only if no newer entry exists.
			recs = append(recs, RecentRecord{Record: *rec, Rev: kr})
		}
		return nil
	})
	return recs, ok, err
}

func containsNSID(list []syntax.NSID, n syntax.NSID) bool {
	for _, x := range list {
		if strings.EqualFold(x.String(), n.String()) {
			return true
		}
	}
	return false
}
