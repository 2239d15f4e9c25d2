package api

import (
	"context"
)

type describeServerOutput struct {
	DID                  string   `json:"did"`
	AvailableUserDomains []string `json:"availableUserDomains"`
	InviteCodeRequired   bool     `json:"inviteCodeRequired"`
	Links                struct {
		PrivacyPolicy  string `json:"privacyPolicy,omitempty"`
		TermsOfService string `json:"termsOfService,omitempty"`
	} `json:"links"`
	Contact struct {
		Email string `json:"email,omitempty"`
	} `json:"contact"`
	BlobUploadLimit int64 `json:"blobUploadLimit,omitempty"`
}

func (s *server) describeServer(context.Context, *noParams) (*describeServerOutput, error) {
	out := &describeServerOutput{
		DID:                  s.cfg.ServiceDID,
		AvailableUserDomains: s.cfg.AvailableUserDomains,
		InviteCodeRequired:   s.cfg.InviteRequired,
		BlobUploadLimit:      max(s.cfg.BlobUploadLimit, 0),
	}
	out.Links.PrivacyPolicy = s.cfg.PrivacyPolicyURL
	out.Links.TermsOfService = s.cfg.TermsOfServiceURL
	out.Contact.Email = s.cfg.ContactEmail
	return out, nil
}
