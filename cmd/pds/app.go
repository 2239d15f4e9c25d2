package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/api"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/internal/dbprobe"
	"github.com/pdsbox/pds/lexicons"
	"github.com/pdsbox/pds/mail"
	"github.com/pdsbox/pds/oauth"
	"github.com/pdsbox/pds/s3store"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// dbFile is the bbolt file in the data directory.
const dbFile = "pds.db"

// errDBInUse means another process (a running server) holds the database.
var errDBInUse = errors.New("the database is in use by another pds process")

// app is the wired server: storage, domain services and the HTTP handler.
type app struct {
	cfg      *config
	log      *slog.Logger
	db       *bolt.DB
	auth     *auth.Store
	blobs    *blobstore.Store
	accounts *account.Service
	events   *events.Sequencer
	crawler  *events.Crawler
	resolver *identity.Resolver // shared by the API and the account
	tokens   *auth.EmailTokens  // single-use tokens (PLC operations, deletion)
	handler  http.Handler
	// outbox (nil without SMTP) and email: see wireEmail.
	outbox  *mail.Outbox
	email   *account.Email
	oauth   *oauth.Server
	metrics *metrics // nil unless enabled
	// probe reaches the network for status checks; statusCache keeps the
	// last report for the public page.
	probe       *statusProbe
	statusCache statusCache
}

func openApp(ctx context.Context, cfg *config, log *slog.Logger, lockTimeout time.Duration) (*app, error) {
	db, err := bolt.Open(filepath.Join(cfg.DataDir, dbFile), 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, errDBInUse
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dbFile, err)
	}
	a := &app{cfg: cfg, log: log, db: db}
	if err := a.wire(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return a, nil
}

func (a *app) wire(ctx context.Context) error {
	cfg := a.cfg
	var err error
	if cfg.Metrics || cfg.MetricsListen != "" {
		a.metrics = newMetrics(a)
	}
	if a.auth, err = auth.New(a.db, auth.Config{JWTSecret: cfg.JWTSecret, ServiceDID: cfg.ServiceDID, Account: account.AuthIdentity, MinLoginDuration: cfg.MinLoginDuration, Now: cfg.Now}); err != nil {
		return err
	}
	blobCfg := blobstore.Config{Dir: cfg.BlobDir, MaxSize: cfg.BlobLimit}
	if cfg.S3 != nil {
		st, err := s3store.New(*cfg.S3)
		if err != nil {
			return err
		}
		blobCfg.Remote = st
	}
	if a.blobs, err = blobstore.New(a.db, blobCfg); err != nil {
		return err
	}
	crawlCfg := events.CrawlerConfig{Hostname: cfg.Hostname, URLs: cfg.Crawlers, Log: a.log}
	if cfg.Dial != nil {
		crawlCfg.HTTP = httpClientWith(cfg.Dial, 30*time.Second)
	}
	a.crawler = events.NewCrawler(crawlCfg)
	if a.events, err = events.New(a.db, events.Config{Retention: cfg.EventRetention, Log: a.log, OnPublish: a.onPublish}); err != nil {
		return err
	}
	if a.tokens, err = auth.NewEmailTokens(a.db, cfg.Now); err != nil {
		return err
	}
	plc := &identity.PLCClient{URL: cfg.PLCURL, HTTP: &http.Client{Timeout: 15 * time.Second, Transport: refusePublicPLC(cfg, http.DefaultTransport)}}
	resolver := &identity.Resolver{PLC: plc, HTTP: identity.NewSafeClient(15*time.Second, cfg.AllowPrivateUpstreams)}
	if cfg.Dial != nil {
		plc.HTTP = httpClientWith(cfg.Dial, 15*time.Second)
		resolver.HTTP = httpClientWith(cfg.Dial, 15*time.Second)
		resolver.DNS = resolverWith(cfg.Dial)
	}
	a.resolver = resolver
	a.accounts, err = account.Open(ctx, a.db, a.auth, a.blobs, account.Config{
		DataDir:        cfg.DataDir,
		Hostname:       cfg.Hostname,
		PublicURL:      cfg.PublicURL,
		ServiceDomains: cfg.ServiceDomains,
		DIDMethod:      account.DIDMethod(cfg.DIDMethod),
		PLC:            plc,
		Resolver:       resolver,
		RotationKey:    cfg.RotationKey,
		Log:            a.log,
		Events:         a.events,
		Tokens:         a.tokens,
		RequestCrawl:   a.crawler.RequestNow,
	})
	if err != nil {
		return err
	}
	if err := a.wireEmail(); err != nil {
		return err
	}
	rotationPub, err := cfg.RotationKey.PublicKey()
	if err != nil {
		return err
	}
	cat := lexicon.NewBaseCatalog()
	if err := cat.LoadEmbedFS(lexicons.FS); err != nil {
		return fmt.Errorf("loading lexicons: %w", err)
	}
	if a.oauth, err = a.newOAuth(cat); err != nil {
		return err
	}
	a.handler = api.NewRouter(api.Deps{
		Config: api.Config{
			Version:               version,
			Hostname:              cfg.Hostname,
			PublicURL:             cfg.PublicURL,
			ServiceDID:            cfg.ServiceDID,
			AvailableUserDomains:  cfg.ServiceDomains,
			InviteRequired:        cfg.InviteRequired,
			AdminPassword:         cfg.AdminPassword,
			BlobUploadLimit:       cfg.BlobLimit,
			ContactEmail:          cfg.ContactEmail,
			AppView:               api.Service{DID: cfg.AppViewDID, URL: cfg.AppViewURL},
			ReportService:         api.Service{DID: cfg.ReportDID, URL: cfg.ReportURL},
			AllowPrivateUpstreams: cfg.AllowPrivateUpstreams,
			RotationKey:           rotationPub,
			TrustedProxies:        cfg.TrustedProxies,
			MaxImportBytes:        cfg.MaxImportBytes,
		},
		Resolver: resolver,
		Accounts: a.accounts,
		Auth:     a.auth,
		Blobs:    a.blobs,
		Events:   a.events,
		Lexicons: cat,
		Log:      a.log,
		Email:    a.email,
		OAuth:    a.oauth,
		Health:   dbprobe.New(a.db, time.Second).Check,
	})
	a.probe = defaultStatusProbe(cfg)
	a.handler = a.withOps(a.handler)
	return nil
}

// Close disconnects firehose consumers and closes the database.
func (a *app) Close() error {
	a.events.Close()
	return a.db.Close()
}

// openOffline opens the data directory for a command run beside (not
// inside) the server, reporting failures on stderr; hint says what to do
// when a running server holds the database.
func openOffline(dataFlag string, stderr io.Writer, hint string) (*app, bool) {
	cfg, err := loadConfig(os.Getenv, "", dataFlag)
	if err != nil {
		fmt.Fprintf(stderr, "pds: configuration: %v\n", err)
		return nil, false
	}
	a, err := openApp(context.Background(), cfg, newLogger(stderr, "warn"), 200*time.Millisecond)
	if err != nil {
		fmt.Fprintf(stderr, "pds: %v (%s)\n", err, hint)
		return nil, false
	}
	return a, true
}
