// Command pds is a single-user atproto Personal Data Server.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return 0
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "pds %s\n", version)
		return 0
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "dev":
		return devCmd(args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(args[1:], stdout, stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "backup":
		return backupCmd(args[1:], stdout, stderr)
	case "restore":
		return restoreCmd(args[1:], stdout, stderr)
	case "account":
		return accountCmd(args[1:], stdout, stderr)
	case "seq":
		return seqCmd(args[1:], stdout, stderr)
	case "help", "--help", "-h":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "pds: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `pds %s: a single-user atproto Personal Data Server

Usage:
  pds dev [--data DIR] [--handle H]
                 try it: a PDS on http://localhost:2583 with its own PLC
                 directory and an account, printed; no internet needed
  pds serve [--listen ADDR] [--data DIR]
                 run the server (default 127.0.0.1:2583, data under ./data)
  pds account create --handle H --password P [--email E]
                 create the server's one account
  pds account invite
                 print the invite code for creating the account from a client
  pds status [--json]
                 ask the running server what is wrong: handle, DID document,
                 HTTPS, relays, disk, firehose; each failure with its fix
  pds backup --out FILE
                 write a backup archive (database snapshot, keys, blobs),
                 also while the server runs
  pds restore FILE [--force] [--relay URL]
                 restore an archive into an empty data directory; the
                 firehose resumes above every seq relays may have seen
  pds seq raise N
                 after restoring a backup: make the next firehose seq greater
                 than N (the last seq relays saw), with the server stopped
  pds version    print the version
  pds help       show this help

Configuration comes from the environment (PDS_HOSTNAME, PDS_PORT,
PDS_DATA_DIRECTORY, PDS_JWT_SECRET, ...); see README.md.
`, version)
}
