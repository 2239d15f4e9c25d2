package api

import (
	"context"
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

// withEmail is h on a server with email flows, and 501 on one without.
func (a *adminAPI) withEmail(h http.HandlerFunc) http.HandlerFunc {
	if a.email != nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) { writeError(w, r, a.s.log, errNoEmailFlows) }
}

// account returns the account if did (or a handle, where the lexicon allows
// one) names it.
func (a *adminAPI) account(ctx context.Context, ident string) (*account.Account, error) {
	acct, err := a.s.accounts.Account(ctx)
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

// accountView is com.atproto.admin.defs#accountView.
type accountView struct {
	DID              string `json:"did"`
	Handle           string `json:"handle"`
	Email            string `json:"email,omitempty"`
	IndexedAt        string `json:"indexedAt"`
	EmailConfirmedAt string `json:"emailConfirmedAt,omitempty"`
	InvitesDisabled  bool   `json:"invitesDisabled"`
	InviteNote       string `json:"inviteNote,omitempty"`
	Invites          []any  `json:"invites"`
}

func (a *adminAPI) accountView(acct *account.Account) *accountView {
	v := &accountView{
		DID:       acct.DID.String(),
		Handle:    acct.Handle.String(),
		Email:     acct.Email,
		IndexedAt: acct.CreatedAt.UTC().Format(time.RFC3339Nano),
		Invites:   []any{},
	}
	if !acct.EmailConfirmedAt.IsZero() {
		v.EmailConfirmedAt = acct.EmailConfirmedAt.UTC().Format(time.RFC3339Nano)
	}
	v.InvitesDisabled, v.InviteNote = a.s.accounts.InvitesDisabled()
	return v
}

type getAccountInfoParams struct {
	DID string `query:"did"`
}

func (a *adminAPI) getAccountInfo(ctx context.Context, p *getAccountInfoParams) (*accountView, error) {
	acct, err := a.account(ctx, p.DID)
	if err != nil {
		return nil, err
	}
	return a.accountView(acct), nil
}

// maxAccountInfos bounds the dids of getAccountInfos.
const maxAccountInfos = 100

type getAccountInfosParams struct {
	DIDs []string `query:"dids"`
}

type getAccountInfosOutput struct {
	Infos []*accountView `json:"infos"`
}

func (a *adminAPI) getAccountInfos(ctx context.Context, p *getAccountInfosParams) (*getAccountInfosOutput, error) {
	if len(p.DIDs) == 0 || len(p.DIDs) > maxAccountInfos {
		return nil, invalidRequest("dids: 1 to %d DIDs", maxAccountInfos)
	}
	out := &getAccountInfosOutput{Infos: []*accountView{}}
	acct, err := a.s.accounts.Account(ctx)
	if err == nil && slices.Contains(p.DIDs, acct.DID.String()) {
		out.Infos = append(out.Infos, a.accountView(acct))
	}
	return out, nil
}

type adminPasswordInput struct {
	DID      string `json:"did"`
	Password string `json:"password"`
}

// updateAccountPassword sets the password; every session ends, as with a
// reset.
func (a *adminAPI) updateAccountPassword(ctx context.Context, in *adminPasswordInput) (*noOutput, error) {
	if _, err := a.account(ctx, in.DID); err != nil {
		return nil, err
	}
	return nil, a.s.accounts.SetPassword(ctx, in.Password)
}

type adminEmailInput struct {
	Account string `json:"account"`
	Email   string `json:"email"`
}

func (a *adminAPI) updateAccountEmail(ctx context.Context, in *adminEmailInput) (*noOutput, error) {
	if _, err := a.account(ctx, in.Account); err != nil {
		return nil, err
	}
	return nil, a.email.AdminSetEmail(ctx, in.Email)
}

type adminHandleInput struct {
	DID    string `json:"did"`
	Handle string `json:"handle"`
}

// updateAccountHandle changes the handle as updateHandle does (PLC
// operation for did:plc, then the handle and its #identity event in one
// transaction).
func (a *adminAPI) updateAccountHandle(ctx context.Context, in *adminHandleInput) (*noOutput, error) {
	if _, err := a.account(ctx, in.DID); err != nil {
		return nil, err
	}
	if _, err := syntax.ParseHandle(in.Handle); err != nil {
		return nil, xerr(http.StatusBadRequest, "InvalidHandle", "Invalid handle")
	}
	_, err := a.s.accounts.UpdateHandle(ctx, in.Handle)
	return nil, err
}

type sendEmailInput struct {
	RecipientDID string `json:"recipientDid"`
	Content      string `json:"content"`
	Subject      string `json:"subject"`
	SenderDID    string `json:"senderDid"`
	Comment      string `json:"comment"`
}

type sendEmailOutput struct {
	Sent bool `json:"sent"`
}

// sendEmail queues a message from the operator to the account's address.
// The content is sent as text (its HTML part escaped): the reference's
// template takes HTML, which we do not pass through unreviewed.
func (a *adminAPI) sendEmail(ctx context.Context, in *sendEmailInput) (*sendEmailOutput, error) {
	if in.Content == "" || in.SenderDID == "" {
		return nil, invalidRequest("content and senderDid are required")
	}
	if _, err := a.account(ctx, in.RecipientDID); err != nil {
		return nil, err
	}
	subject := in.Subject
	if subject == "" {
		subject = "Message from " + a.s.cfg.Hostname
	}
	if err := a.email.SendToAccount(ctx, subject, in.Content); err != nil {
		return nil, err
	}
	return &sendEmailOutput{Sent: true}, nil
}

// inviteCode is com.atproto.server.defs#inviteCode.
type inviteCode struct {
	Code       string `json:"code"`
	Available  int    `json:"available"`
	Disabled   bool   `json:"disabled"`
	ForAccount string `json:"forAccount"`
	CreatedBy  string `json:"createdBy"`
	CreatedAt  string `json:"createdAt"`
	Uses       []any  `json:"uses"`
}

type getInviteCodesOutput struct {
	Codes []inviteCode `json:"codes"`
}

// getInviteCodes lists the server's invite code with its one possible use.
func (a *adminAPI) getInviteCodes(ctx context.Context, _ *noParams) (*getInviteCodesOutput, error) {
	info, err := a.s.accounts.InviteCodeInfo()
	if err != nil {
		return nil, err
	}
	code := inviteCode{
		Code:       info.Code,
		Available:  1,
		ForAccount: "admin",
		CreatedBy:  "admin",
		CreatedAt:  info.CreatedAt.Format(time.RFC3339Nano),
		Uses:       []any{},
	}
	if acct, err := a.s.accounts.Account(ctx); err == nil {
		// The one account exists: the code admits no one else.
		code.Available = 0
		code.Uses = []any{map[string]any{"usedBy": acct.DID.String(), "usedAt": acct.CreatedAt.UTC().Format(time.RFC3339Nano)}}
	}
	return &getInviteCodesOutput{Codes: []inviteCode{code}}, nil
}

type disableInviteCodesInput struct {
	Codes    []string `json:"codes"`
	Accounts []string `json:"accounts"`
}

// maxDisableCodes bounds the lists of disableInviteCodes.
const maxDisableCodes = 1000

func (a *adminAPI) disableInviteCodes(_ context.Context, in *disableInviteCodesInput) (*noOutput, error) {
	if len(in.Codes) > maxDisableCodes || len(in.Accounts) > maxDisableCodes {
		return nil, invalidRequest("at most %d codes and accounts", maxDisableCodes)
	}
	if slices.Contains(in.Accounts, "admin") {
		return nil, invalidRequest("cannot disable admin invite codes")
	}
	for _, c := range in.Codes {
		if _, err := a.s.accounts.DisableInviteCode(c); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

type accountInvitesInput struct {
	Account string `json:"account"`
	Note    string `json:"note"`
}

// setAccountInvites is disableAccountInvites (disabled) or
// enableAccountInvites.
func (a *adminAPI) setAccountInvites(disabled bool) func(context.Context, *accountInvitesInput) (*noOutput, error) {
	return func(ctx context.Context, in *accountInvitesInput) (*noOutput, error) {
		if _, err := a.account(ctx, in.Account); err != nil {
			return nil, err
		}
		if len(in.Note) > 10_000 {
			return nil, invalidRequest("note is too long")
		}
		return nil, a.s.accounts.SetInvitesDisabled(disabled, in.Note)
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
func (a *adminAPI) deleteAccount(ctx context.Context, in *adminDeleteAccountInput) (*noOutput, error) {
	did, err := syntax.ParseDID(strings.TrimSpace(in.DID))
	if err != nil {
		return nil, invalidRequest("did: a DID is required")
	}
	if err := a.s.accounts.AdminDelete(ctx, did); err != nil {
		if errors.Is(err, account.ErrWrongDID) || errors.Is(err, account.ErrNoAccount) {
			err = errAccountNotFound
		}
		return nil, err
	}
	a.s.log.Info("account deleted by the operator", "did", did.String())
	return nil, nil
}

type adminDeleteAccountInput struct {
	DID string `json:"did"`
}
