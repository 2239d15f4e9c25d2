//go:build !linux

package main

import "os"

// Elsewhere the password is read from stdin as a line (no prompt).
func isTerminal(*os.File) bool { return false }

func echoOff(*os.File) (func(), error) { return func() {}, nil }
