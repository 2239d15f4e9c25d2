package main

import (
	"context"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/oauth"
)

// oauthAccount is the account as the OAuth sign-in pages see it.
type oauthAccount struct {
	accounts *account.Service
	store    *auth.Store
}

func (a oauthAccount) OAuthAccount(ctx context.Context) (syntax.DID, syntax.Handle, error) {
	acct, err := a.accounts.Account(ctx)
	if err != nil {
		return "", "", err
	}
	return acct.DID, acct.Handle, nil
}

func (a oauthAccount) CheckPassword(ctx context.Context, identifier, password string) error {
	return a.store.CheckAccountPassword(ctx, identifier, password)
}

// newOAuth builds the authorization server: issuer the public URL, tokens
// for the service DID, keys derived from the JWT secret. The development
// switch that lets proxying reach private addresses also lets client
// metadata come from them.
func (a *app) newOAuth(cat lexicon.Catalog) (*oauth.Server, error) {
	cfg := a.cfg
	// The sign-in page asks for the email second factor where the account
	// has it on (account.Email, wired before).
	var factor oauth.SecondFactor
	if a.email != nil {
		factor = a.email.SignInFactor()
	}
	return oauth.New(oauth.Config{
		Issuer:              cfg.PublicURL,
		ServiceDID:          cfg.ServiceDID,
		Secret:              cfg.JWTSecret,
		AllowPrivateClients: cfg.AllowPrivateUpstreams,
		Lexicons:            cat,
		Now:                 cfg.Now,
		Log:                 a.log,
	}, oauth.Deps{
		DB:           a.db,
		Account:      oauthAccount{a.accounts, a.auth},
		SecondFactor: factor,
		ClientIP:     api.ClientIP(cfg.TrustedProxies),
	})
}
