package main

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// trimMapping drops the pages of the bbolt memory map from this process's
// resident set. bbolt reads through a shared, read-only file mapping, and
// every append to the firehose bucket reads the previous tail leaf, so over
// time the whole file counts as resident even though nothing will read most
// of it again. The pages stay in the page cache (the kernel frees them under
// pressure) and are mapped again on the next read, so this only returns
// memory the process was not using; it never changes data.
func trimMapping(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		// The read transaction keeps bbolt from remapping meanwhile.
		size := tx.Size()
		if size <= 0 {
			return nil
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(size), syscall.MADV_DONTNEED)
		if errno != 0 {
			return errno
		}
		return nil
	})
}
