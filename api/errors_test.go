package api

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/mail"
	"github.com/pdsbox/pds/mst"
	"github.com/pdsbox/pds/repo"
)

// knownErrors names every exported Err* of the module's packages. The test
// below parses the sources, so a new error without a row here fails it.
var knownErrors = map[string]error{
	"account.ErrNoAccount":            account.ErrNoAccount,
	"account.ErrAccountExists":        account.ErrAccountExists,
	"account.ErrInvalidInviteCode":    account.ErrInvalidInviteCode,
	"account.ErrInvalidEmail":         account.ErrInvalidEmail,
	"account.ErrDIDCreation":          account.ErrDIDCreation,
	"account.ErrHandleNotVerified":    account.ErrHandleNotVerified,
	"account.ErrDIDUpdate":            account.ErrDIDUpdate,
	"account.ErrInvalidPreferences":   account.ErrInvalidPreferences,
	"account.ErrAccountDeactivated":   account.ErrAccountDeactivated,
	"account.ErrAccountTakendown":     account.ErrAccountTakendown,
	"account.ErrAccountDeleted":       account.ErrAccountDeleted,
	"account.ErrInvalidTransition":    account.ErrInvalidTransition,
	"account.ErrAccountActive":        account.ErrAccountActive,
	"account.ErrDIDNotReady":          account.ErrDIDNotReady,
	"account.ErrDIDResolution":        account.ErrDIDResolution,
	"account.ErrWrongDID":             account.ErrWrongDID,
	"account.ErrNoTokenStore":         account.ErrNoTokenStore,
	"auth.ErrEmailTokenExpired":       auth.ErrEmailTokenExpired,
	"auth.ErrEmailTokenInvalid":       auth.ErrEmailTokenInvalid,
	"auth.ErrEmailTokenPurpose":       auth.ErrEmailTokenPurpose,
	"identity.ErrInvalidPLCOperation": identity.ErrInvalidPLCOperation,

	"account.ErrNoEmail":                    account.ErrNoEmail,
	"account.ErrEmailTokenRequired":         account.ErrEmailTokenRequired,
	"account.ErrEmailAuthFactorUnconfirmed": account.ErrEmailAuthFactorUnconfirmed,
	"account.ErrAuthFactorTokenRequired":    account.ErrAuthFactorTokenRequired,
	"account.ErrMailNotConfigured":          account.ErrMailNotConfigured,
	"account.ErrInvalidSubject":             account.ErrInvalidSubject,
	"account.ErrEmailMismatch":              account.ErrEmailMismatch,
	"mail.ErrConfig":                        mail.ErrConfig,
	"mail.ErrInvalidAddress":                mail.ErrInvalidAddress,
	"mail.ErrInvalidMessage":                mail.ErrInvalidMessage,
	"mail.ErrPermanent":                     mail.ErrPermanent,

	"auth.ErrInvalidLogin":           auth.ErrInvalidLogin,
	"auth.ErrExpiredToken":           auth.ErrExpiredToken,
	"auth.ErrInvalidToken":           auth.ErrInvalidToken,
	"auth.ErrInvalidAppPasswordName": auth.ErrInvalidAppPasswordName,
	"auth.ErrAppPasswordExists":      auth.ErrAppPasswordExists,
	"auth.ErrAppPasswordNotFound":    auth.ErrAppPasswordNotFound,
	"auth.ErrRateLimited":            auth.ErrRateLimited,
	"auth.ErrHashBusy":               auth.ErrHashBusy,
	"auth.ErrInvalidPassword":        auth.ErrInvalidPassword,
	"auth.ErrTokenRevoked":           auth.ErrTokenRevoked,
	"auth.ErrServiceAuth":            auth.ErrServiceAuth,
	"auth.ErrOtherCredential":        auth.ErrOtherCredential,

	"blobstore.ErrTooLarge":     blobstore.ErrTooLarge,
	"blobstore.ErrNotFound":     blobstore.ErrNotFound,
	"blobstore.ErrBlobNotFound": blobstore.ErrBlobNotFound,
	"blobstore.ErrCorrupt":      blobstore.ErrCorrupt,

	"events.ErrFutureCursor":    events.ErrFutureCursor,
	"events.ErrConsumerTooSlow": events.ErrConsumerTooSlow,
	"events.ErrClosed":          events.ErrClosed,

	"identity.ErrHandleNotFound":    identity.ErrHandleNotFound,
	"identity.ErrServiceNotFound":   identity.ErrServiceNotFound,
	"identity.ErrForbiddenTarget":   identity.ErrForbiddenTarget,
	"identity.ErrInvalidHandle":     identity.ErrInvalidHandle,
	"identity.ErrUnsupportedDomain": identity.ErrUnsupportedDomain,
	"identity.ErrInvalidHostname":   identity.ErrInvalidHostname,
	"identity.ErrInvalidEndpoint":   identity.ErrInvalidEndpoint,
	"identity.ErrInvalidDID":        identity.ErrInvalidDID,
	"identity.ErrPLC":               identity.ErrPLC,
	"identity.ErrDIDNotFound":       identity.ErrDIDNotFound,

	"mst.ErrInvalidKey":    mst.ErrInvalidKey,
	"mst.ErrBlockNotFound": mst.ErrBlockNotFound,
	"mst.ErrMalformedNode": mst.ErrMalformedNode,

	"repo.ErrInvalidWrite":   repo.ErrInvalidWrite,
	"repo.ErrInvalidRecord":  repo.ErrInvalidRecord,
	"repo.ErrRecordExists":   repo.ErrRecordExists,
	"repo.ErrRecordNotFound": repo.ErrRecordNotFound,
	"repo.ErrInvalidSwap":    repo.ErrInvalidSwap,
	"repo.ErrNoHead":         repo.ErrNoHead,
	"repo.ErrExportBusy":     repo.ErrExportBusy,
	"repo.ErrWrongRepo":      repo.ErrWrongRepo,
	"repo.ErrInvalidCAR":     repo.ErrInvalidCAR,
	"repo.ErrCorrupt":        repo.ErrCorrupt,
}

// serverFaults are the errors that answer 500, each with why no request
// can cause it. Everything else a client can cause, and maps to 4xx or a
// named 5xx. TestImportCorruptMST (cmd/pds) shows that a hostile CAR's
// broken MST is repo.ErrInvalidCAR, not one of the mst errors below.
var serverFaults = map[string]bool{
	"blobstore.ErrCorrupt": true, // our blob metadata does not decode: damaged storage, as the reference's 500
	"repo.ErrCorrupt":      true, // our blocks or index disagree: damaged storage
	"mst.ErrBlockNotFound": true, // a node our own tree names is gone (imports wrap theirs as ErrInvalidCAR)
	"mst.ErrMalformedNode": true, // a node of our own tree does not decode (idem)
	"mail.ErrConfig":       true, // bad SMTP settings: refused at startup, never in a request
	"mail.ErrPermanent":    true, // an SMTP 5xx: seen by the outbox worker only, never in a request
}

// exportedErrors parses the module's packages and returns "pkg.ErrName" of
// every exported package-level variable whose name starts with Err.
func exportedErrors(t *testing.T) []string {
	t.Helper()
	root := ".."
	var names []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "e2e", "node_modules", ".git", "cmd", "internal":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					if strings.HasPrefix(n.Name, "Err") && n.IsExported() {
						names = append(names, f.Name.Name+"."+n.Name)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func TestEveryErrorMapsToXRPC(t *testing.T) {
	found := exportedErrors(t)
	if len(found) < 40 {
		t.Fatalf("found only %d exported errors: is the source walk broken?", len(found))
	}
	seen := map[string]bool{}
	for _, name := range found {
		seen[name] = true
		err, ok := knownErrors[name]
		if !ok {
			t.Errorf("%s has no row in knownErrors: add it, and map it in errorTable", name)
			continue
		}
		xe := asXRPC(err)
		if serverFaults[name] {
			if xe.Status != 500 {
				t.Errorf("%s is a server fault but answers %d %s", name, xe.Status, xe.Name)
			}
			continue
		}
		if xe.Status == 500 || xe.Name == "" || xe.Message == "" {
			t.Errorf("%s answers %d %q %q: map it in errorTable", name, xe.Status, xe.Name, xe.Message)
		}
	}
	for name := range knownErrors {
		if !seen[name] {
			t.Errorf("knownErrors row %s names no exported error in the sources", name)
		}
	}
}
