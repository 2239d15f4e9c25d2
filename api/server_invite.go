package api

import (
	"context"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

type createInviteCodeOutput struct {
	Code string `json:"code"`
}

type createInviteCodeInput struct {
	UseCount   *int64 `json:"useCount"`
	ForAccount string `json:"forAccount"`
}

// createInviteCode (admin, by its route's permission) answers the server's one invite code: a
// single-account server has exactly one, good for creating that account.
// `pds account invite` asks a running server this way, as `pds account
// create` asks it to create the account.
func (s *server) createInviteCode(_ context.Context, in *createInviteCodeInput) (*createInviteCodeOutput, error) {
	if in.UseCount == nil {
		return nil, invalidRequest("Input must have the property \"useCount\"")
	}
	if *in.UseCount < 1 {
		return nil, invalidRequest("Input/useCount must be an integer of at least 1")
	}
	if in.ForAccount != "" {
		if _, err := syntax.ParseDID(in.ForAccount); err != nil {
			return nil, invalidRequest("Input/forAccount must be a valid did")
		}
	}
	code, err := s.accounts.InviteCode()
	if err != nil {
		return nil, err
	}
	return &createInviteCodeOutput{Code: code}, nil
}
