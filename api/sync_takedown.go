package api

import (
	"context"
	"net/http"

	"github.com/pdsbox/pds/account"
)

// repoTakendown answers RepoTakendown while the operator has taken the
// account down, as the reference's assertRepoAvailability does for the
// sync reads (getRepo, getRecord, getBlob, listBlobs, getLatestCommit...).
// getRepoStatus and listRepos report the status instead.
func (s *server) repoTakendown(ctx context.Context, did string) error {
	if st, err := s.accounts.Status(ctx); err == nil && st == account.StatusTakendown {
		return xerr(http.StatusBadRequest, "RepoTakendown", "Repo has been takendown: %s", did)
	}
	return nil
}
