package api

import (
	"context"
	"net/http"

	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/identity"
)

type createAccountOutput struct {
	AccessJWT  string `json:"accessJwt"`
	RefreshJWT string `json:"refreshJwt"`
	Handle     string `json:"handle"`
	DID        string `json:"did"`
	// DIDDoc lets the client find its PDS without a lookup.
	DIDDoc any `json:"didDoc,omitempty"`
}

func (s *server) createAccount(ctx context.Context, in *createAccountInput) (*createAccountOutput, error) {
	r := requestOf(ctx)
	// Admin credentials: every attempt is counted (429 beyond the budget),
	// and with the account in place the answer is the same whatever the
	// password: wrong and right ones used to answer differently, an oracle
	// for guessing it.
	if hasBasicAuth(r) {
		if err := s.limitCreateAdmin(responseHeader(ctx), r); err != nil {
			return nil, err
		}
		if s.accounts.Exists() {
			return nil, account.ErrAccountExists
		}
	}
	if !s.isAdmin(r) && s.cfg.InviteRequired {
		if in.InviteCode == "" {
			return nil, xerr(http.StatusBadRequest, "InvalidInviteCode", "No invite code provided")
		}
		if err := s.accounts.CheckInviteCode(in.InviteCode); err != nil {
			return nil, err
		}
	}
	if in.PLCOp != nil || in.DID != "" {
		return s.createMigratingAccount(ctx, in)
	}
	if _, _, err := s.accounts.Create(ctx, account.CreateParams{Handle: in.Handle, Email: in.Email, Password: in.Password}); err != nil {
		return nil, err
	}
	sess, err := s.auth.Login(ctx, in.Handle, in.Password)
	if err != nil {
		return nil, err
	}
	out := &createAccountOutput{AccessJWT: sess.AccessJWT, RefreshJWT: sess.RefreshJWT, Handle: sess.Handle.String(), DID: sess.DID.String()}
	if pub, err := s.accounts.PublicKey(); err == nil {
		out.DIDDoc = identity.DIDWebDocument(sess.DID, sess.Handle, pub, s.cfg.PublicURL)
	}
	return out, nil
}
