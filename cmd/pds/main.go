// Command pds is a single-user atproto Personal Data Server.
//
// # Storage map
//
// pds opens one bbolt file, <data>/pds.db (app.go), so that a commit, its
// blob references and its firehose event are one transaction. Each bucket
// has one owning package; no other package reads or writes it.
//
//	bucket               key                      value                                      owner
//	blocks               CID bytes                rev | refcount (uint32 BE) | block bytes   repo
//	records              collection/rkey          record CID bytes                           repo
//	recent_writes        rev | path               empty (read-after-write log)               repo
//	repo_meta            "did" "commit" "rev" "data"  the head                               repo
//	blobs                CID string               JSON metadata (mime, size, times, refs)    blobstore
//	blob_refs            collection/rkey          CID bytes of the blobs the record uses     blobstore
//	blob_missing         CID string               JSON {refs, path}: imported, not uploaded  blobstore
//	events               seq (uint64 BE)          time (unix ns, 8 bytes) | wire frame       events
//	account              "record"                 JSON: DID, handle, email, times            account
//	auth_credentials     "account"                JSON: password hash, tokens-not-before     auth
//	auth_app_passwords   name                     JSON app password record (hash, id)        auth
//	auth_refresh_tokens  jti                      JSON refresh token record                  auth
//	auth_email_tokens    purpose                  JSON {hash, issuedAt, expiresAt}           auth
//	server_meta          "invite_code"            the invite code                            account
//	server_meta          "account_status"         account.Status ("active" when absent)      account
//	account_prefs        "app.bsky"               JSON preferences array                     account
//	account_email_factor "email"                  JSON {did, email, enabledAt}: 2nd factor   account
//	admin_takedowns      "record:<uri>" "blob:<cid>" "account"  JSON subject status          account
//	server_meta          invite_code_created_at, invites_disabled(_note)                     account
//	repo_import          staging of importRepo (discarded on open when left over)            repo
//	oauth_requests       request id               JSON pushed authorization request          oauth
//	oauth_families       family id                JSON token family (client, scope, DPoP)    oauth
//	oauth_devices        device id                JSON signed-in browser                     oauth
//	mail_outbox          id (uint64 BE)           JSON message waiting to be sent            mail
//
// Data directories written before the account package owned the record
// have bucket auth_account (the record and the password hash in one JSON
// value); account.Open splits it into the two above in one transaction.
//
// Outside the file: <data>/repo-signing-key.hex (account, 0600), the blob
// files under the blob directory (blobstore), and the secrets of config.go.
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
	case "blobs":
		return blobsCmd(args[1:], stdout, stderr)
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
	case "oauth":
		return oauthCmd(args[1:], stdout, stderr)
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
  pds account create --handle H [--email E]
                 create the server's one account (password prompted, or
                 the first line of stdin)
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
  pds blobs migrate --to s3 [--delete]
                 copy the disk blobs to PDS_BLOBSTORE_S3_BUCKET, verified
                 against their CIDs (server stopped)
  pds seq raise N
                 after restoring a backup: make the next firehose seq greater
                 than N (the last seq relays saw), with the server stopped
  pds oauth list | pds oauth revoke SESSION-ID
                 list the apps signed in with OAuth, or revoke one
                 (with the server stopped; or use /oauth/account)
  pds version    print the version
  pds help       show this help

Configuration comes from the environment (PDS_HOSTNAME, PDS_PORT,
PDS_DATA_DIRECTORY, PDS_JWT_SECRET, ...); see README.md.
`, version)
}
