//go:build !linux

package main

import bolt "go.etcd.io/bbolt"

// trimMapping is a no-op where the resident set of a file mapping is not
// worth trimming by hand.
func trimMapping(*bolt.DB) error { return nil }
