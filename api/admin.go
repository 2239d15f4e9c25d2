package api

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
)

// adminAPI serves com.atproto.admin.* and server.createInviteCode: the
// operator's methods (pdsadmin, goat pds admin), reached only with HTTP
// Basic admin:<PDS_ADMIN_PASSWORD>. Everything acts on the one account; a
// DID other than its own is AccountNotFound / NotFound, as the reference
// answers for an unknown account.
type adminAPI struct {
	s     *server
	email *account.Email
}

func newAdminAPI(s *server, email *account.Email) *adminAPI {
	return &adminAPI{s: s, email: email}
}

var errAccountNotFound = xerr(http.StatusBadRequest, "NotFound", "Account not found")

// account returns the account if did (or a handle, where the lexicon allows
// one) names it.
func (a *adminAPI) account(r *http.Request, ident string) (*account.Account, error) {
	acct, err := a.s.accounts.Account(r.Context())
	if err != nil {
		return nil, errAccountNotFound
	}
	ident = strings.TrimSpace(ident)
	if ident == "" {
		return nil, invalidRequest("an account DID is required")
	}
	if ident != acct.DID.String() && !strings.EqualFold(ident, acct.Handle.String()) {
		return nil, errAccountNotFound
	}
	return acct, nil
}

// accountView is com.atproto.admin.defs#accountView of the account.
func (a *adminAPI) accountView(acct *account.Account) map[string]any {
	v := map[string]any{
		"did":       acct.DID.String(),
		"handle":    acct.Handle.String(),
		"indexedAt": acct.CreatedAt.UTC().Format(time.RFC3339Nano),
	}
	if acct.Email != "" {
		v["email"] = acct.Email
	}
	if !acct.EmailConfirmedAt.IsZero() {
		v["emailConfirmedAt"] = acct.EmailConfirmedAt.UTC().Format(time.RFC3339Nano)
	}
	disabled, note := a.s.accounts.InvitesDisabled()
	v["invitesDisabled"] = disabled
	if note != "" {
		v["inviteNote"] = note
	}
	v["invites"] = []any{}
	return v
}

func (a *adminAPI) getAccountInfo(w http.ResponseWriter, r *http.Request) {
	acct, err := a.account(r, r.URL.Query().Get("did"))
	if err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, a.accountView(acct))
}

// maxAccountInfos bounds the dids of getAccountInfos.
const maxAccountInfos = 100

func (a *adminAPI) getAccountInfos(w http.ResponseWriter, r *http.Request) {
	dids := r.URL.Query()["dids"]
	if len(dids) == 0 || len(dids) > maxAccountInfos {
		writeError(w, r, a.s.log, invalidRequest("dids: 1 to %d DIDs", maxAccountInfos))
		return
	}
	infos := []any{}
	acct, err := a.s.accounts.Account(r.Context())
	if err == nil && slices.Contains(dids, acct.DID.String()) {
		infos = append(infos, a.accountView(acct))
	}
	writeJSON(w, http.StatusOK, map[string]any{"infos": infos})
}

type adminPasswordInput struct {
	DID      string `json:"did"`
	Password string `json:"password"`
}

// updateAccountPassword sets the password; every session ends, as with a
// reset.
func (a *adminAPI) updateAccountPassword(w http.ResponseWriter, r *http.Request) {
	var in adminPasswordInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if _, err := a.account(r, in.DID); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if err := a.s.accounts.SetPassword(r.Context(), in.Password); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type adminEmailInput struct {
	Account string `json:"account"`
	Email   string `json:"email"`
}

func (a *adminAPI) updateAccountEmail(w http.ResponseWriter, r *http.Request) {
	if a.email == nil {
		writeError(w, r, a.s.log, errNoEmailFlows)
		return
	}
	var in adminEmailInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if _, err := a.account(r, in.Account); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if err := a.email.AdminSetEmail(r.Context(), in.Email); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type adminHandleInput struct {
	DID    string `json:"did"`
	Handle string `json:"handle"`
}

// updateAccountHandle changes the handle as updateHandle does (PLC
// operation for did:plc, then the handle and its #identity event in one
// transaction).
func (a *adminAPI) updateAccountHandle(w http.ResponseWriter, r *http.Request) {
	var in adminHandleInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if _, err := a.account(r, in.DID); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if _, err := syntax.ParseHandle(in.Handle); err != nil {
		writeError(w, r, a.s.log, xerr(http.StatusBadRequest, "InvalidHandle", "Invalid handle"))
		return
	}
	if _, err := a.s.accounts.UpdateHandle(r.Context(), in.Handle); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type sendEmailInput struct {
	RecipientDID string `json:"recipientDid"`
	Content      string `json:"content"`
	Subject      string `json:"subject"`
	SenderDID    string `json:"senderDid"`
	Comment      string `json:"comment"`
}

// sendEmail queues a message from the operator to the account's address.
// The content is sent as text (its HTML part escaped): the reference's
// template takes HTML, which we do not pass through unreviewed.
func (a *adminAPI) sendEmail(w http.ResponseWriter, r *http.Request) {
	if a.email == nil {
		writeError(w, r, a.s.log, errNoEmailFlows)
		return
	}
	var in sendEmailInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if in.Content == "" || in.SenderDID == "" {
		writeError(w, r, a.s.log, invalidRequest("content and senderDid are required"))
		return
	}
	if _, err := a.account(r, in.RecipientDID); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	subject := in.Subject
	if subject == "" {
		subject = "Message from " + a.s.cfg.Hostname
	}
	if err := a.email.SendToAccount(r.Context(), subject, in.Content); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sent": true})
}

// getInviteCodes lists the server's invite code with its one possible use.
func (a *adminAPI) getInviteCodes(w http.ResponseWriter, r *http.Request) {
	info, err := a.s.accounts.InviteCodeInfo()
	if err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	code := map[string]any{
		"code":       info.Code,
		"available":  1,
		"disabled":   false,
		"forAccount": "admin",
		"createdBy":  "admin",
		"createdAt":  info.CreatedAt.Format(time.RFC3339Nano),
		"uses":       []any{},
	}
	if acct, err := a.s.accounts.Account(r.Context()); err == nil {
		// The one account exists: the code admits no one else.
		code["available"] = 0
		code["uses"] = []any{map[string]any{"usedBy": acct.DID.String(), "usedAt": acct.CreatedAt.UTC().Format(time.RFC3339Nano)}}
	}
	writeJSON(w, http.StatusOK, map[string]any{"codes": []any{code}})
}

type disableInviteCodesInput struct {
	Codes    []string `json:"codes"`
	Accounts []string `json:"accounts"`
}

// maxDisableCodes bounds the lists of disableInviteCodes.
const maxDisableCodes = 1000

func (a *adminAPI) disableInviteCodes(w http.ResponseWriter, r *http.Request) {
	var in disableInviteCodesInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if len(in.Codes) > maxDisableCodes || len(in.Accounts) > maxDisableCodes {
		writeError(w, r, a.s.log, invalidRequest("at most %d codes and accounts", maxDisableCodes))
		return
	}
	if slices.Contains(in.Accounts, "admin") {
		writeError(w, r, a.s.log, invalidRequest("cannot disable admin invite codes"))
		return
	}
	for _, c := range in.Codes {
		if _, err := a.s.accounts.DisableInviteCode(c); err != nil {
			writeError(w, r, a.s.log, err)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

type accountInvitesInput struct {
	Account string `json:"account"`
	Note    string `json:"note"`
}

func (a *adminAPI) setAccountInvites(disabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in accountInvitesInput
		if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
			writeError(w, r, a.s.log, err)
			return
		}
		if _, err := a.account(r, in.Account); err != nil {
			writeError(w, r, a.s.log, err)
			return
		}
		if len(in.Note) > 10_000 {
			writeError(w, r, a.s.log, invalidRequest("note is too long"))
			return
		}
		if err := a.s.accounts.SetInvitesDisabled(disabled, in.Note); err != nil {
			writeError(w, r, a.s.log, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

type emailTokensInput struct {
	Purpose string `json:"purpose"`
}

// issueEmailTokens is this server's own admin method behind the operator's
// CLI while the server runs (`pds account tokens`, `plc-token`,
// `delete-token`): a fresh code for the purpose asked for, or for every
// purpose with a live code when none is named; only hashes are stored, so
// a fresh code replaces the mailed one. The purpose comes in a JSON body or,
// for a call without a body, in the query.
func (a *adminAPI) issueEmailTokens(w http.ResponseWriter, r *http.Request) {
	if a.email == nil {
		writeError(w, r, a.s.log, errNoEmailFlows)
		return
	}
	in := emailTokensInput{Purpose: r.URL.Query().Get("purpose")}
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		var body emailTokensInput
		if err := decodeJSON(w, r, maxJSONBody, &body); err != nil {
			writeError(w, r, a.s.log, err)
			return
		}
		if body.Purpose != "" && in.Purpose != "" && body.Purpose != in.Purpose {
			writeError(w, r, a.s.log, invalidRequest("purpose given twice, differently"))
			return
		}
		if body.Purpose != "" {
			in.Purpose = body.Purpose
		}
	}
	issued, err := a.email.IssueForOperator(r.Context(), in.Purpose)
	if errors.Is(err, auth.ErrEmailTokenPurpose) {
		err = invalidRequest("%v", err)
	}
	if err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	tokens := []any{}
	for _, t := range issued {
		tokens = append(tokens, map[string]any{"purpose": string(t.Purpose), "token": t.Token, "expiresAt": t.ExpiresAt.UTC().Format(time.RFC3339)})
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"tokens": tokens})
}

// deleteAccount is com.atproto.admin.deleteAccount: the operator deletes the
// account without its password or a token, through the same deletion as
// com.atproto.server.deleteAccount (#account status deleted on the
// firehose). A DID other than the account's, or no account, is
// errAccountNotFound.
func (a *adminAPI) deleteAccount(w http.ResponseWriter, r *http.Request) {
	var in struct {
		DID string `json:"did"`
	}
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	did, err := syntax.ParseDID(strings.TrimSpace(in.DID))
	if err != nil {
		writeError(w, r, a.s.log, invalidRequest("did: a DID is required"))
		return
	}
	if err := a.s.accounts.AdminDelete(r.Context(), did); err != nil {
		if errors.Is(err, account.ErrWrongDID) || errors.Is(err, account.ErrNoAccount) {
			err = errAccountNotFound
		}
		writeError(w, r, a.s.log, err)
		return
	}
	a.s.log.Info("account deleted by the operator", "did", did.String())
	w.WriteHeader(http.StatusOK)
}
