package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"
)

// accountTakedown: pds account takedown [--ref R] | untakedown. The
// account's status becomes takendown (announced by #account; reads answer
// RepoTakendown, logins fail, sessions end) or active again.
func accountTakedown(apply bool) func([]string, io.Writer, io.Writer) int {
	name := "account untakedown"
	if apply {
		name = "account takedown"
	}
	return func(args []string, stdout, stderr io.Writer) int {
		fs, data := accountFlags(name, stderr)
		ref := fs.String("ref", "", "takedown reference (default: the current unix time, as pdsadmin)")
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if *ref == "" {
			*ref = strconv.FormatInt(time.Now().Unix(), 10)
		}
		a, cfg, ok := offlineOrServer(name, *data, stderr)
		if !ok {
			return 1
		}
		var err error
		if a != nil {
			defer a.Close()
			ctx := context.Background()
			if apply {
				if err = a.accounts.SetAccountTakedownRef(*ref); err == nil {
					if err = a.accounts.Takedown(ctx); err == nil {
						err = a.auth.RevokeAllSessions(ctx)
					}
				}
			} else if err = a.accounts.ReverseTakedown(ctx); err == nil {
				err = a.accounts.SetAccountTakedownRef("")
			}
		} else {
			var did string
			if did, err = serverDID(cfg); err == nil {
				_, err = adminRequest(cfg, "POST", "/xrpc/com.atproto.admin.updateSubjectStatus", nil, map[string]any{
					"subject":  map[string]any{"$type": "com.atproto.admin.defs#repoRef", "did": did},
					"takedown": map[string]any{"applied": apply, "ref": *ref},
				})
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
		if apply {
			fmt.Fprintf(stdout, "account taken down (ref %s)\n", *ref)
		} else {
			fmt.Fprintln(stdout, "takedown reversed: the account is active")
		}
		return 0
	}
}
