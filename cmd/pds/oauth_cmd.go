package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pdsbox/pds/oauth"
)

const oauthUsage = "usage: pds oauth list | pds oauth revoke SESSION-ID"

// oauthCmd: pds oauth list|revoke, on the apps signed in with OAuth. It
// opens the database, so the server must be stopped; while it runs, the
// owner uses the Connected apps page (/oauth/account) instead.
func oauthCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] == "list" && len(args) != 1) || (args[0] == "revoke" && len(args) != 2) ||
		(args[0] != "list" && args[0] != "revoke") {
		fmt.Fprintln(stderr, oauthUsage)
		return 2
	}
	a, ok := openOffline("", stderr, "stop the server first, or use the Connected apps page at /oauth/account")
	if !ok {
		return 1
	}
	defer a.Close()
	ctx := context.Background()
	if args[0] == "revoke" {
		found, err := oauth.RevokeSession(ctx, a.db, args[1])
		if err != nil {
			fmt.Fprintf(stderr, "pds: %v\n", err)
			return 1
		}
		if !found {
			fmt.Fprintf(stderr, "pds oauth revoke: no session %q (see pds oauth list)\n", args[1])
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s: its tokens no longer work\n", args[1])
		return 0
	}
	sessions, err := oauth.ListSessions(ctx, a.db, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v\n", err)
		return 1
	}
	if len(sessions) == 0 {
		fmt.Fprintln(stdout, "no app is signed in with OAuth")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tAPP\tCLIENT ID\tSCOPE\tSINCE\tLAST REFRESH\tEXPIRES")
	for _, s := range sessions {
		name := s.ClientName
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, name, s.ClientID, s.Scope,
			s.CreatedAt.UTC().Format(time.DateTime), s.LastUsed.UTC().Format(time.DateTime), s.ExpiresAt.UTC().Format(time.DateOnly))
	}
	tw.Flush()
	return 0
}
