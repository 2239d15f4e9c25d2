package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
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
	cfg, err := loadConfig(os.Getenv, "", "")
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return 1
	}
	a, err := openApp(context.Background(), cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v (stop the server first)\n", err)
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
