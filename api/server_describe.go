package api

import (
	"net/http"
)

func (s *server) describeServer(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{
		"did":                  s.cfg.ServiceDID,
		"availableUserDomains": s.cfg.AvailableUserDomains,
		"inviteCodeRequired":   s.cfg.InviteRequired,
		"links":                map[string]string{},
		"contact":              map[string]string{},
	}
	if s.cfg.BlobUploadLimit > 0 {
		out["blobUploadLimit"] = s.cfg.BlobUploadLimit
	}
	if s.cfg.PrivacyPolicyURL != "" {
		out["links"].(map[string]string)["privacyPolicy"] = s.cfg.PrivacyPolicyURL
	}
	if s.cfg.TermsOfServiceURL != "" {
		out["links"].(map[string]string)["termsOfService"] = s.cfg.TermsOfServiceURL
	}
	if s.cfg.ContactEmail != "" {
		out["contact"].(map[string]string)["email"] = s.cfg.ContactEmail
	}
	writeJSON(w, http.StatusOK, out)
}
