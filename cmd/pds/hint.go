package main

import (
	"os/exec"
	"path/filepath"
	"strings"
)

// selfCommand is how to run this program again, for the hints it prints:
// "go run ./cmd/pds" when it was started by go run (its executable is in
// go's temporary build directory), else the command as it was invoked
// ("./pds", "pds", "/usr/local/bin/pds"). A bare name that is not on PATH
// (a binary in the working directory) gets "./".
func selfCommand(arg0 string) string {
	slash := filepath.ToSlash(arg0)
	if strings.Contains(slash, "/go-build") && strings.Contains(slash, "/exe/") {
		return "go run ./cmd/pds"
	}
	if !strings.ContainsRune(arg0, filepath.Separator) {
		if _, err := exec.LookPath(arg0); err != nil {
			return "./" + arg0
		}
	}
	return arg0
}

// dataHint repeats --data in a hint when the server was started with it,
// so that the printed command opens the same data directory.
func dataHint(dataFlag string) string {
	if dataFlag == "" {
		return ""
	}
	return " --data " + shellQuote(dataFlag)
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain
// path characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
