package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The account password never goes on the command line, where every local
// user can read it in /proc/*/cmdline and shells keep it in their history:
// `pds account create` reads it from a prompt (echo off, asked twice) when
// stdin is a terminal, else from the first line of stdin:
//
//	printf '%s\n' "$PASSWORD" | pds account create --handle alice.example.com

// maxPasswordLine bounds what is read from stdin for the password.
const maxPasswordLine = 4096

// readPassword reads the new account password from in (a terminal: prompt
// on prompt twice with echo off; otherwise: the first line).
func readPassword(in *os.File, prompt io.Writer) (string, error) {
	if isTerminal(in) {
		first, err := promptNoEcho(in, prompt, "Password: ")
		if err != nil {
			return "", err
		}
		again, err := promptNoEcho(in, prompt, "Password again: ")
		if err != nil {
			return "", err
		}
		if first != again {
			return "", errors.New("the passwords differ")
		}
		return nonEmpty(first)
	}
	return readPasswordLine(in)
}

// readPasswordLine reads the first line of r, without its line ending.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxPasswordLine), maxPasswordLine).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	return nonEmpty(strings.TrimRight(line, "\r\n"))
}

func nonEmpty(p string) (string, error) {
	if p == "" {
		return "", errors.New("no password on stdin (pipe it in, or run in a terminal to be prompted)")
	}
	return p, nil
}

func promptNoEcho(in *os.File, prompt io.Writer, label string) (string, error) {
	fmt.Fprint(prompt, label)
	restore, err := echoOff(in)
	if err != nil {
		return "", err
	}
	p, err := readPasswordLine(in)
	restore()
	fmt.Fprintln(prompt)
	return p, err
}
