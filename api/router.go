// Package api serves the XRPC methods of the PDS over chi: it decodes and
// bounds requests, authorizes them, calls one domain method and encodes the
// answer or the XRPC error envelope.
package api

import (
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/go-chi/chi/v5"
	"github.com/pdsbox/pds/account"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/blobstore"
	"github.com/pdsbox/pds/events"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/oauth"
)

// Config is the part of the server configuration the API needs.
type Config struct {
	Version   string
	Hostname  string
	PublicURL string
	// ServiceDID is the server's own DID, did:web:<hostname>.
	ServiceDID           string
	AvailableUserDomains []string
	InviteRequired       bool
	AdminPassword        string
	BlobUploadLimit      int64
	ContactEmail         string
	PrivacyPolicyURL     string
	TermsOfServiceURL    string
	// AppView answers app.bsky and chat.bsky calls by default (empty URL:
	// none); ReportService takes createReport.
	AppView, ReportService Service
	// AllowPrivateUpstreams lifts the SSRF guard (https, public addresses)
	// on proxy targets: for tests and development only.
	AllowPrivateUpstreams bool
	// RotationKey is the PLC rotation key, recommended to migrating users.
	RotationKey atcrypto.PublicKey
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (nil: DefaultTrustedProxies).
	TrustedProxies []netip.Prefix
	// MaxImportBytes bounds an importRepo CAR (0: DefaultMaxImportBytes).
	MaxImportBytes int64
}

// Deps are the domain services behind the API.
type Deps struct {
	Config   Config
	Accounts *account.Service
	Auth     *auth.Store
	Blobs    *blobstore.Store
	Events   *events.Sequencer
	Resolver *identity.Resolver
	Lexicons lexicon.Catalog
	Log      *slog.Logger
	// Health, if set, reports whether the database answers (within a
	// second); /xrpc/_health turns 503 when it does not.
	Health func() error
	// Verifiers are asked for a request's principal before the built-in
	// ones (service JWT, session JWT, admin Basic).
	Verifiers []auth.Verifier
	// OAuth is the authorization server (nil: no OAuth): its endpoints
	// are mounted and its verifier asked first.
	OAuth *oauth.Server
	// LoginByIP and LoginByIdentifier bound createSession attempts; nil
	// limiters get the defaults (30 per 5 minutes).
	LoginByIP, LoginByIdentifier *auth.RateLimiter
	// Email runs the flows confirmed by a mailed code (server_email.go).
	Email *account.Email
}

type server struct {
	cfg      Config
	accounts *account.Service
	auth     *auth.Store
	blobs    *blobstore.Store
	events   *events.Sequencer
	lex      lexicon.Catalog
	log      *slog.Logger
	loginIP  *auth.RateLimiter
	loginID  *auth.RateLimiter
	tids     *syntax.TIDClock // record keys for creates without one
	resolver *identity.Resolver
	upstream *http.Client      // proxied calls, behind the SSRF guard
	local    map[string]string // local XRPC method → its HTTP method
	mux      http.Handler      // the router, for HEAD of GET routes
	// operatorUpstream reaches the services the operator configured.
	operatorUpstream *http.Client
	// authed: local XRPC methods with a permission to check first.
	authed map[string]bool
	// verifiers are asked in order for a request's principal (requireAuth).
	verifiers []auth.Verifier
	oauth     *oauth.Server // nil without OAuth
	// subSlots counts open subscribeRepos connections, per address too.
	subSlots subscriberSlots
	// handleLimit bounds handle updates (the reference: 10 per 5 minutes).
	handleLimit *auth.RateLimiter
	// adminLimit bounds admin credential attempts per address;
	// knownAddrs are the owner's recent addresses (login_guard.go).
	adminLimit *auth.RateLimiter
	// createAdminLimit is the tighter budget of admin credentials on
	// createAccount.
	createAdminLimit *auth.RateLimiter
	knownAddrs       *auth.KnownAddrs
	// jtis remembers the service tokens already used (replay refusal).
	jtis *auth.JTICache
	// healthCheck probes the database for /xrpc/_health (nil: none).
	healthCheck func() error
	// email runs the email flows and the email second factor of logins
	// (nil without them).
	email *account.Email
}

// EmailTokensPath is this server's own admin endpoint behind `pds account
// tokens` (POST {"purpose"?} → {"tokens": [{purpose, token, expiresAt}]}).
const EmailTokensPath = "/pds/admin/email-tokens"

// Body limits, as the reference PDS sets them.
const (
	maxJSONBody   = 150 << 10 // most procedures
	maxRecordBody = 1_000_000 // createRecord, putRecord, applyWrites
)

// NewRouter returns the HTTP handler of the PDS: every route, its auth and
// its handler, in one table.
func NewRouter(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Config.TrustedProxies == nil {
		d.Config.TrustedProxies = DefaultTrustedProxies
	}
	s := &server{cfg: d.Config, accounts: d.Accounts, auth: d.Auth, blobs: d.Blobs, events: d.Events, lex: d.Lexicons, log: d.Log,
		loginIP: d.LoginByIP, loginID: d.LoginByIdentifier, tids: syntax.NewTIDClock(0), resolver: d.Resolver,
		upstream:         identity.NewSafeClient(0, d.Config.AllowPrivateUpstreams),
		handleLimit:      auth.NewRateLimiter(10, 5*time.Minute, nil),
		adminLimit:       auth.NewRateLimiter(adminAttempts, 5*time.Minute, nil),
		createAdminLimit: auth.NewRateLimiter(createAdminAttempts, 5*time.Minute, nil),
		knownAddrs:       auth.NewKnownAddrs(knownAddrTTL, nil),
		jtis:             auth.NewJTICache(),
		healthCheck:      d.Health, email: d.Email}
	// What the operator configured is trusted as configured (http, loopback
	// or a LAN address included); only services learned from DID documents
	// need the SSRF guard.
	s.cfg.AppView.operator, s.cfg.ReportService.operator = true, true
	s.operatorUpstream = identity.NewSafeClient(0, true)
	if s.loginIP == nil {
		s.loginIP = auth.NewRateLimiter(30, 5*time.Minute, nil)
	}
	if s.loginID == nil {
		s.loginID = auth.NewRateLimiter(30, 5*time.Minute, nil)
	}
	s.verifiers = append(slices.Clone(d.Verifiers), s.defaultVerifiers()...)
	if d.OAuth != nil {
		s.oauth = d.OAuth
		s.verifiers = append([]auth.Verifier{d.OAuth}, s.verifiers...)
	}
	// need is the permission a route declares; routes without it are public.
	need := s.requireAuth

	r := chi.NewRouter()
	r.Use(recoverPanics(s.log), logRequests(s.log), cors)
	r.Use(s.checkQueryParams)

	r.Get("/", page(s.landing))
	r.Get("/robots.txt", page(s.robots))
	r.Get("/xrpc/_health", page(s.health))
	r.Get("/.well-known/atproto-did", page(s.atprotoDID))
	r.Get("/.well-known/did.json", page(s.didJSON))
	if s.oauth != nil {
		mountOAuth(r, s.oauth)
	}

	// com.atproto.server
	r.Get("/xrpc/com.atproto.server.describeServer", query(s, s.describeServer))
	r.Post("/xrpc/com.atproto.server.createAccount", procedure(s, maxJSONBody, s.createAccount))
	r.Post("/xrpc/com.atproto.server.createSession", procedure(s, maxJSONBody, s.createSession))
	r.Post("/xrpc/com.atproto.server.refreshSession", action(s, s.refreshSession))
	r.With(need(auth.PermAccountRead)).Get("/xrpc/com.atproto.server.getSession", query(s, s.getSession))
	r.Post("/xrpc/com.atproto.server.deleteSession", action(s, s.deleteSession))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.createAppPassword", procedure(s, maxJSONBody, s.createAppPassword))
	r.With(need(auth.PermAccountManage)).Get("/xrpc/com.atproto.server.listAppPasswords", query(s, s.listAppPasswords))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.revokeAppPassword", procedure(s, maxJSONBody, s.revokeAppPassword))
	r.With(need(auth.PermAccountRead)).Get("/xrpc/com.atproto.server.checkAccountStatus", query(s, s.checkAccountStatus))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.activateAccount", action(s, s.activateAccount))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.deactivateAccount", procedure(s, maxJSONBody, s.deactivateAccount))
	r.Post("/xrpc/com.atproto.server.deleteAccount", procedure(s, maxJSONBody, s.deleteAccount))

	em := newEmailAPI(s, d.Email)
	r.With(need(auth.PermAccountEmail)).Post("/xrpc/com.atproto.server.requestEmailConfirmation", action(s, em.requestEmailConfirmation))
	r.With(need(auth.PermAccountEmail)).Post("/xrpc/com.atproto.server.confirmEmail", procedure(s, maxJSONBody, em.confirmEmail))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.requestEmailUpdate", action(s, em.requestEmailUpdate))
	r.With(need(auth.PermAccountEmail)).Post("/xrpc/com.atproto.server.updateEmail", procedure(s, maxJSONBody, em.updateEmail))
	r.Post("/xrpc/com.atproto.server.requestPasswordReset", procedure(s, maxJSONBody, em.requestPasswordReset))
	r.Post("/xrpc/com.atproto.server.resetPassword", procedure(s, maxJSONBody, em.resetPassword))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.server.requestAccountDelete", action(s, em.requestAccountDelete))
	r.With(need(auth.PermIdentityPLC)).Post("/xrpc/com.atproto.identity.requestPlcOperationSignature", action(s, em.requestPlcOperationSignature))

	// com.atproto.admin (and createInviteCode): HTTP Basic admin only
	ad := newAdminAPI(s, d.Email)
	admin := r.With(need(auth.PermAdmin)) // requireAuth counts admin attempts (limitAdmin)
	admin.Get("/xrpc/com.atproto.admin.getAccountInfo", query(s, ad.getAccountInfo))
	admin.Get("/xrpc/com.atproto.admin.getAccountInfos", query(s, ad.getAccountInfos))
	admin.Post("/xrpc/com.atproto.admin.updateAccountPassword", procedure(s, maxJSONBody, ad.updateAccountPassword))
	admin.Post("/xrpc/com.atproto.admin.updateAccountEmail", ad.withEmail(procedure(s, maxJSONBody, ad.updateAccountEmail)))
	admin.Post("/xrpc/com.atproto.admin.updateAccountHandle", procedure(s, maxJSONBody, ad.updateAccountHandle))
	admin.Post("/xrpc/com.atproto.admin.sendEmail", ad.withEmail(procedure(s, maxJSONBody, ad.sendEmail)))
	admin.Post("/xrpc/com.atproto.server.createInviteCode", procedure(s, maxJSONBody, s.createInviteCode))
	admin.Get("/xrpc/com.atproto.admin.getInviteCodes", query(s, ad.getInviteCodes))
	admin.Post("/xrpc/com.atproto.admin.disableInviteCodes", procedure(s, maxJSONBody, ad.disableInviteCodes))
	admin.Post("/xrpc/com.atproto.admin.disableAccountInvites", procedure(s, maxJSONBody, ad.setAccountInvites(true)))
	admin.Post("/xrpc/com.atproto.admin.enableAccountInvites", procedure(s, maxJSONBody, ad.setAccountInvites(false)))
	admin.Post("/xrpc/com.atproto.admin.updateSubjectStatus", procedure(s, maxJSONBody, ad.updateSubjectStatus))
	admin.Get("/xrpc/com.atproto.admin.getSubjectStatus", query(s, ad.getSubjectStatus))
	admin.Post("/xrpc/com.atproto.admin.deleteAccount", procedure(s, maxJSONBody, ad.deleteAccount))
	admin.Post(EmailTokensPath, ad.issueEmailTokens) // not XRPC: `pds account tokens`

	// com.atproto.repo
	r.With(need(auth.PermRepoWrite)).Post("/xrpc/com.atproto.repo.createRecord", procedure(s, maxRecordBody, s.createRecord))
	r.With(need(auth.PermRepoWrite)).Post("/xrpc/com.atproto.repo.putRecord", procedure(s, maxRecordBody, s.putRecord))
	r.With(need(auth.PermRepoWrite)).Post("/xrpc/com.atproto.repo.deleteRecord", procedure(s, maxJSONBody, s.deleteRecord))
	r.With(need(auth.PermRepoWrite)).Post("/xrpc/com.atproto.repo.applyWrites", procedure(s, maxRecordBody, s.applyWrites))
	r.With(s.requireAvailableRepo, s.foreignToAppView).Get("/xrpc/com.atproto.repo.getRecord", query(s, s.getRecord))
	r.With(s.requireAvailableRepo, s.foreignToAppView).Get("/xrpc/com.atproto.repo.listRecords", query(s, s.listRecords))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.repo.describeRepo", query(s, s.describeRepo))
	r.With(streamDeadlines, need(auth.PermBlobWrite)).Post("/xrpc/com.atproto.repo.uploadBlob", rawInput(s, s.uploadBlob))
	r.With(need(auth.PermAccountManage)).Post("/xrpc/com.atproto.repo.importRepo", rawInput(s, s.importRepo))
	r.With(need(auth.PermAccountRead)).Get("/xrpc/com.atproto.repo.listMissingBlobs", query(s, s.listMissingBlobs))

	// com.atproto.identity
	r.Get("/xrpc/com.atproto.identity.resolveHandle", query(s, s.resolveHandle))
	r.Get("/xrpc/com.atproto.identity.resolveDid", query(s, s.resolveDid))
	r.With(need(auth.PermIdentityHandle)).Post("/xrpc/com.atproto.identity.updateHandle", procedure(s, maxJSONBody, s.updateHandle))
	r.With(need(auth.PermAccountRead)).Get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", query(s, s.getRecommendedDidCredentials))
	r.With(need(auth.PermIdentityPLC)).Post("/xrpc/com.atproto.identity.signPlcOperation", procedure(s, maxJSONBody, s.signPlcOperation))
	r.With(need(auth.PermIdentityPLC)).Post("/xrpc/com.atproto.identity.submitPlcOperation", procedure(s, maxJSONBody, s.submitPlcOperation))
	r.With(need(auth.PermRPC)).Get("/xrpc/com.atproto.server.getServiceAuth", query(s, s.getServiceAuth))

	// app.bsky served here; the rest is proxied
	r.With(need(auth.PermPreferences), s.proxiedElsewhere, s.appViewScope).Get("/xrpc/app.bsky.actor.getPreferences", query(s, s.getPreferences))
	r.With(need(auth.PermPreferences), s.proxiedElsewhere, s.appViewScope).Post("/xrpc/app.bsky.actor.putPreferences", procedure(s, maxJSONBody, s.putPreferences))
	r.With(need(auth.PermRPC)).Get("/xrpc/app.bsky.feed.getFeed", proxied(s.getFeed))
	r.With(need(auth.PermRPC)).Post("/xrpc/app.bsky.notification.registerPush", proxied(s.registerPush))

	// com.atproto.sync
	r.Get("/xrpc/com.atproto.sync.subscribeRepos", firehose(s, s.subscribeRepos))
	r.With(streamDeadlines, s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getRepo", stream(s, s.getRepo))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getLatestCommit", query(s, s.getLatestCommit))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getRecord", stream(s, s.syncGetRecord))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getBlocks", stream(s, s.getBlocks))
	r.Get("/xrpc/com.atproto.sync.listRepos", query(s, s.listRepos))
	r.Get("/xrpc/com.atproto.sync.getRepoStatus", query(s, s.getRepoStatus))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getHead", query(s, s.getHead))
	r.With(streamDeadlines, s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getCheckout", stream(s, s.getCheckout))
	r.With(streamDeadlines, s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.getBlob", stream(s, s.getBlob))
	r.With(s.requireAvailableRepo).Get("/xrpc/com.atproto.sync.listBlobs", query(s, s.listBlobs))

	// Remember which method each local XRPC route takes, so that a call with
	// the wrong one is refused rather than proxied.
	s.local = map[string]string{}
	s.authed = map[string]bool{}
	// A route's own middlewares (beyond the global ones) are its auth
	// (need), whose query is checked after the caller is authenticated
	// (see checkQueryParams), except the few that are not about auth.
	global := len(r.Middlewares())
	ptr := func(mw func(http.Handler) http.Handler) uintptr { return reflect.ValueOf(mw).Pointer() }
	notAuth := map[uintptr]bool{ptr(streamDeadlines): true, ptr(s.requireAvailableRepo): true, ptr(s.foreignToAppView): true, ptr(s.proxiedElsewhere): true}
	_ = chi.Walk(r, func(method, route string, _ http.Handler, mws ...func(http.Handler) http.Handler) error {
		if nsid, ok := strings.CutPrefix(route, "/xrpc/"); ok {
			s.local[nsid] = method
			s.authed[nsid] = slices.ContainsFunc(mws[min(global, len(mws)):], func(mw func(http.Handler) http.Handler) bool { return !notAuth[ptr(mw)] })
		}
		return nil
	})
	r.HandleFunc("/xrpc/*", s.catchAll)
	s.mux = r
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)
	return r
}

func (s *server) notImplemented(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, s.log, xerr(http.StatusNotImplemented, "MethodNotImplemented", "Method Not Implemented"))
}

func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, s.log, xerr(http.StatusNotFound, "NotFound", "Not Found"))
}

func (s *server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, s.log, xerr(http.StatusMethodNotAllowed, "InvalidRequest", "Incorrect HTTP method (%s)", r.Method))
}
