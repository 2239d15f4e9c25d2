package events

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// DeleteBeforeTx deletes every stored event with a seq below seq inside the
// caller's write transaction, as the reference drops a deleted account's
// earlier events. The sequence counter is untouched: later events keep
// numbers above every earlier one, and consumers with an older cursor
// simply resume at seq.
func (s *Sequencer) DeleteBeforeTx(tx *bolt.Tx, seq int64) error {
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return fmt.Errorf("events: bucket missing")
	}
	c := b.Cursor()
	for k, _ := c.First(); k != nil && string(k) < string(seqKey(seq)); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
