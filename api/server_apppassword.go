package api

import (
	"context"
	"errors"

	"github.com/pdsbox/pds/auth"
)

// appPasswordView is an app password as listAppPasswords and
// createAppPassword answer it (the password itself only once, on creation).
type appPasswordView struct {
	Name       string `json:"name"`
	Password   string `json:"password,omitempty"`
	CreatedAt  string `json:"createdAt"`
	Privileged bool   `json:"privileged"`
}

func (s *server) createAppPassword(ctx context.Context, in *appPasswordInput) (*appPasswordView, error) {
	// The name rule (trimmed, 1 to auth.MaxAppPasswordNameLength
	// characters) is auth's.
	ap, err := s.auth.CreateAppPassword(ctx, in.Name, in.Privileged)
	if err != nil {
		return nil, err
	}
	return &appPasswordView{Name: ap.Name, Password: ap.Password, CreatedAt: ap.CreatedAt.UTC().Format(timeFormat), Privileged: ap.Privileged}, nil
}

type listAppPasswordsOutput struct {
	Passwords []appPasswordView `json:"passwords"`
}

func (s *server) listAppPasswords(ctx context.Context, _ *noParams) (*listAppPasswordsOutput, error) {
	aps, err := s.auth.ListAppPasswords(ctx)
	if err != nil {
		return nil, err
	}
	out := &listAppPasswordsOutput{Passwords: make([]appPasswordView, 0, len(aps))}
	for _, ap := range aps {
		out.Passwords = append(out.Passwords, appPasswordView{Name: ap.Name, CreatedAt: ap.CreatedAt.UTC().Format(timeFormat), Privileged: ap.Privileged})
	}
	return out, nil
}

// revokeAppPassword of a name that does not exist is done already.
func (s *server) revokeAppPassword(ctx context.Context, in *appPasswordInput) (*noOutput, error) {
	if err := s.auth.RevokeAppPassword(ctx, in.Name); err != nil && !errors.Is(err, auth.ErrAppPasswordNotFound) {
		return nil, err
	}
	return nil, nil
}
