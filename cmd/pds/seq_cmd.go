package main

import (
	"fmt"
	"io"
	"strconv"
)

// seqCmd: pds seq raise N.
func seqCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "raise" {
		fmt.Fprintln(stderr, "usage: pds seq raise N")
		return 2
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || n < 0 {
		fmt.Fprintf(stderr, "pds seq raise: %q is not a sequence number\n", args[1])
		return 2
	}
	a, ok := openOffline("", stderr, "stop the server first")
	if !ok {
		return 1
	}
	defer a.Close()
	if err := a.events.RaiseSeq(n); err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "the next event will have seq %d or more\n", a.events.LastSeq()+1)
	return 0
}
