package events

import bolt "go.etcd.io/bbolt"

// LastSeqIn returns the last seq ever assigned, read inside tx (0 before
// the first event): the sequencer's position in a snapshot of the database.
func LastSeqIn(tx *bolt.Tx) int64 {
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return 0
	}
	return int64(b.Sequence())
}

// Subscribers is the number of consumers following the live stream.
func (s *Sequencer) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}
