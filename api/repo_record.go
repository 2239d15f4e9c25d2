package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/identity"
	"github.com/pdsbox/pds/repo"
)

// ourRepo resolves the repo parameter (a DID or handle) to the account's
// repository; any other repository is not hosted here.
func (s *server) ourRepo(ctx context.Context, ident string) (*repo.Repo, error) {
	rp, err := s.accounts.Repo()
	if err != nil {
		return nil, invalidRequest("Could not find repo: %s", ident)
	}
	if ident == rp.DID().String() {
		return rp, nil
	}
	if acct, err := s.accounts.Account(ctx); err == nil && strings.EqualFold(ident, acct.Handle.String()) {
		return rp, nil
	}
	return nil, invalidRequest("Could not find repo: %s", ident)
}

// writableRepo is ourRepo for a write by the authenticated account. A
// well-formed repo that is not the account's is 403 AccountNotFound, as the
// reference answers.
func (s *server) writableRepo(ctx context.Context, ident string) (*repo.Repo, error) {
	rp, err := s.ourRepo(ctx, ident)
	if err != nil {
		if _, perr := syntax.ParseAtIdentifier(ident); perr == nil {
			return nil, xerr(http.StatusForbidden, "AccountNotFound", "Account not found")
		}
		return nil, err
	}
	if p := principalFrom(ctx); p == nil || p.DID != rp.DID() {
		return nil, xerr(http.StatusForbidden, "AuthRequired", "the token's account does not own this repo")
	}
	return rp, nil
}

func parseCollection(s string) (syntax.NSID, error) {
	n, err := syntax.ParseNSID(s)
	if err != nil {
		return "", invalidRequest("Invalid collection: %v", err)
	}
	return n, nil
}

func parseRKey(s string) (syntax.RecordKey, error) {
	k, err := syntax.ParseRecordKey(s)
	if err != nil {
		return "", invalidRequest("Invalid record key: %v", err)
	}
	return k, nil
}

func parseOptCID(name, s string) (*cid.Cid, error) {
	if s == "" {
		return nil, nil
	}
	c, err := cid.Decode(s)
	if err != nil {
		return nil, invalidRequest("Invalid %s: %v", name, err)
	}
	return &c, nil
}

// parseRecord decodes a record from JSON, setting $type to the collection
// when it is missing (as the reference does) and refusing a different one.
func parseRecord(raw json.RawMessage, coll syntax.NSID) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalidRequest("record is required")
	}
	rec, err := repo.ParseRecordJSON(raw)
	if err != nil {
		// err is "invalid record: <cause>": say the cause once.
		return nil, invalidRequest("Invalid record: %s", strings.TrimPrefix(err.Error(), repo.ErrInvalidRecord.Error()+": "))
	}
	switch t := rec["$type"].(type) {
	case nil:
		rec["$type"] = coll.String()
	case string:
		if t != coll.String() {
			return nil, invalidRequest("Invalid $type: expected %s, got %s", coll, t)
		}
	default:
		return nil, invalidRequest("Invalid $type: must be a string")
	}
	return rec, nil
}

// validateRecord applies the lexicon policy of the reference: validate=false
// skips, a known schema must pass, an unknown one is "unknown" unless
// validate=true demanded it. It returns the validationStatus.
func (s *server) validateRecord(coll syntax.NSID, rec map[string]any, validate *bool) (string, error) {
	if validate != nil && !*validate {
		return "", nil
	}
	if _, err := s.lex.Resolve(coll.String()); err != nil {
		if validate != nil && *validate {
			return "", invalidRequest("Lexicon not found: %s", coll)
		}
		return "unknown", nil
	}
	if err := lexicon.ValidateRecord(s.lex, rec, coll.String(), lexicon.AllowLegacyBlob); err != nil {
		return "", invalidRequest("Invalid %s record: %v", coll, err)
	}
	return "valid", nil
}

func atURI(did syntax.DID, coll syntax.NSID, rkey syntax.RecordKey) string {
	return "at://" + did.String() + "/" + coll.String() + "/" + rkey.String()
}

// commitMeta is com.atproto.repo.defs#commitMeta.
type commitMeta struct {
	CID string `json:"cid"`
	Rev string `json:"rev"`
}

func newCommitMeta(c *repo.Commit) *commitMeta {
	return &commitMeta{CID: c.CID.String(), Rev: c.Rev}
}

// recordInput is the input createRecord and putRecord share.
type recordInput struct {
	Repo       string          `json:"repo"`
	Collection string          `json:"collection"`
	RKey       string          `json:"rkey"`
	Validate   *bool           `json:"validate"`
	Record     json.RawMessage `json:"record"`
	SwapCommit string          `json:"swapCommit"`
}

type createRecordInput struct{ recordInput }

func (s *server) createRecord(ctx context.Context, in *createRecordInput) (*writeOutput, error) {
	t, err := s.parseWriteTarget(ctx, in.Repo, in.Collection, in.RKey, in.SwapCommit, repo.ActionCreate)
	if err != nil {
		return nil, err
	}
	rec, status, err := s.prepareRecord(ctx, in.Record, t.coll, in.Validate)
	if err != nil {
		return nil, err
	}
	c, err := t.rp.Apply(ctx, []repo.Write{{Action: repo.ActionCreate, Collection: t.coll, RKey: t.rkey, Record: rec}}, t.swapCommit)
	if err != nil {
		return nil, err
	}
	return writeResult(t, c.Results[0].CID.String(), c, status), nil
}

// writeTarget is the parsed destination of a single-record write.
type writeTarget struct {
	rp         *repo.Repo
	coll       syntax.NSID
	rkey       syntax.RecordKey
	swapCommit *cid.Cid
}

// parseWriteTarget parses what every single-record write names: the repo
// (the account's), the collection, the record key (a new TID when a create
// leaves it empty; of the collection's key type unless deleted) and
// swapCommit, and checks the caller's scope for the action (a put may
// create or update, so it needs both, as the reference decides).
func (s *server) parseWriteTarget(ctx context.Context, repoIdent, coll, rkey, swapCommit string, action repo.Action) (*writeTarget, error) {
	rp, err := s.writableRepo(ctx, repoIdent)
	if err != nil {
		return nil, err
	}
	t := &writeTarget{rp: rp}
	if t.coll, err = parseCollection(coll); err != nil {
		return nil, err
	}
	if rkey == "" && action == repo.ActionCreate {
		t.rkey = syntax.RecordKey(s.tids.Next().String())
	} else if t.rkey, err = parseRKey(rkey); err != nil {
		return nil, err
	}
	if t.swapCommit, err = parseOptCID("swapCommit", swapCommit); err != nil {
		return nil, err
	}
	scope := []string{string(action)}
	if action == repo.ActionPut {
		scope = []string{"create", "update"}
	}
	if err := canRepo(ctx, t.coll.String(), scope...); err != nil {
		return nil, err
	}
	if action != repo.ActionDelete {
		if err := s.checkRKeyType(t.coll, t.rkey); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// prepareRecord decodes a record and applies the lexicon policy.
func (s *server) prepareRecord(ctx context.Context, raw json.RawMessage, coll syntax.NSID, validate *bool) (map[string]any, string, error) {
	rec, err := parseRecord(raw, coll)
	if err != nil {
		return nil, "", err
	}
	if err := s.checkBlobRefs(ctx, raw, rec); err != nil {
		return nil, "", err
	}
	status, err := s.validateRecord(coll, rec, validate)
	if err != nil {
		return nil, "", err
	}
	return rec, status, nil
}

// writeOutput is the answer of createRecord and putRecord.
type writeOutput struct {
	URI              string      `json:"uri"`
	CID              string      `json:"cid"`
	Commit           *commitMeta `json:"commit"`
	ValidationStatus string      `json:"validationStatus,omitempty"`
}

func writeResult(t *writeTarget, cidStr string, c *repo.Commit, status string) *writeOutput {
	return &writeOutput{URI: atURI(t.rp.DID(), t.coll, t.rkey), CID: cidStr, Commit: newCommitMeta(c), ValidationStatus: status}
}

type putRecordInput struct {
	recordInput
	SwapRecord json.RawMessage `json:"swapRecord"`
}

func (s *server) putRecord(ctx context.Context, in *putRecordInput) (*writeOutput, error) {
	t, err := s.parseWriteTarget(ctx, in.Repo, in.Collection, in.RKey, in.SwapCommit, repo.ActionPut)
	if err != nil {
		return nil, err
	}
	// swapRecord: absent = no check; null = the record must not exist.
	var swapRecord *cid.Cid
	mustNotExist := false
	if len(in.SwapRecord) > 0 {
		if string(in.SwapRecord) == "null" {
			mustNotExist = true
		} else {
			var sv string
			if err := json.Unmarshal(in.SwapRecord, &sv); err != nil {
				return nil, invalidRequest("Invalid swapRecord")
			}
			if swapRecord, err = parseOptCID("swapRecord", sv); err != nil {
				return nil, err
			}
		}
	}
	rec, status, err := s.prepareRecord(ctx, in.Record, t.coll, in.Validate)
	if err != nil {
		return nil, err
	}
	// Whether this creates or updates is decided by repo inside the write
	// transaction; swapRecord null is a create that must find no record.
	w := repo.Write{Action: repo.ActionPut, Collection: t.coll, RKey: t.rkey, Record: rec, SwapRecord: swapRecord}
	if mustNotExist {
		w.Action = repo.ActionCreate
	}
	c, err := t.rp.Apply(ctx, []repo.Write{w}, t.swapCommit)
	if mustNotExist && errors.Is(err, repo.ErrRecordExists) {
		return nil, xerr(http.StatusBadRequest, "InvalidSwap", "Record was at %s", t.rkey)
	}
	if err != nil {
		return nil, err
	}
	cidStr := c.Results[0].CID.String()
	return writeResult(t, cidStr, c, status), nil
}

type deleteRecordInput struct {
	Repo       string `json:"repo"`
	Collection string `json:"collection"`
	RKey       string `json:"rkey"`
	SwapRecord string `json:"swapRecord"`
	SwapCommit string `json:"swapCommit"`
}

type deleteRecordOutput struct {
	Commit *commitMeta `json:"commit,omitempty"`
}

func (s *server) deleteRecord(ctx context.Context, in *deleteRecordInput) (*deleteRecordOutput, error) {
	t, err := s.parseWriteTarget(ctx, in.Repo, in.Collection, in.RKey, in.SwapCommit, repo.ActionDelete)
	if err != nil {
		return nil, err
	}
	rp, coll, rkey, swapCommit := t.rp, t.coll, t.rkey, t.swapCommit
	swapRecord, err := parseOptCID("swapRecord", in.SwapRecord)
	if err != nil {
		return nil, err
	}
	c, err := rp.Apply(ctx, []repo.Write{{Action: repo.ActionDelete, Collection: coll, RKey: rkey, SwapRecord: swapRecord}}, swapCommit)
	if errors.Is(err, repo.ErrRecordNotFound) {
		if swapRecord != nil {
			return nil, xerr(http.StatusBadRequest, "InvalidSwap", "Record was at %s", rkey)
		}
		return &deleteRecordOutput{}, nil // deleting nothing is not an error
	}
	if err != nil {
		return nil, err
	}
	return &deleteRecordOutput{Commit: newCommitMeta(c)}, nil
}

type applyWritesInput struct {
	Repo       string            `json:"repo"`
	Validate   *bool             `json:"validate"`
	Writes     []json.RawMessage `json:"writes"`
	SwapCommit string            `json:"swapCommit"`
}

type applyWrite struct {
	Type       string          `json:"$type"`
	Collection string          `json:"collection"`
	RKey       string          `json:"rkey"`
	Value      json.RawMessage `json:"value"`
}

const applyWritesNS = "com.atproto.repo.applyWrites#"

type applyWritesOutput struct {
	Commit  *commitMeta         `json:"commit"`
	Results []applyWritesResult `json:"results"`
}

// applyWritesResult is one of the #createResult, #updateResult and
// #deleteResult of applyWrites.
type applyWritesResult struct {
	Type             string `json:"$type"`
	URI              string `json:"uri,omitempty"`
	CID              string `json:"cid,omitempty"`
	ValidationStatus string `json:"validationStatus,omitempty"`
}

func (s *server) applyWrites(ctx context.Context, in *applyWritesInput) (*applyWritesOutput, error) {
	rp, err := s.writableRepo(ctx, in.Repo)
	if err != nil {
		return nil, err
	}
	if len(in.Writes) == 0 {
		return nil, invalidRequest("writes must not be empty")
	}
	if len(in.Writes) > repo.MaxWrites {
		return nil, invalidRequest("Too many writes. Max: %d", repo.MaxWrites)
	}
	swapCommit, err := parseOptCID("swapCommit", in.SwapCommit)
	if err != nil {
		return nil, err
	}
	writes := make([]repo.Write, len(in.Writes))
	statuses := make([]string, len(in.Writes))
	for i, raw := range in.Writes {
		var aw applyWrite
		if err := json.Unmarshal(raw, &aw); err != nil {
			return nil, describeJSONErrorAt(fmt.Sprintf("Input/writes/%d", i), err)
		}
		coll, err := parseCollection(aw.Collection)
		if err != nil {
			return nil, err
		}
		wr := repo.Write{Collection: coll}
		switch aw.Type {
		case applyWritesNS + "create":
			wr.Action = repo.ActionCreate
			wr.RKey = syntax.RecordKey(s.tids.Next().String())
			if aw.RKey != "" {
				if wr.RKey, err = parseRKey(aw.RKey); err != nil {
					return nil, err
				}
			}
		case applyWritesNS + "update":
			wr.Action = repo.ActionUpdate
		case applyWritesNS + "delete":
			wr.Action = repo.ActionDelete
		default:
			return nil, invalidRequest("writes[%d]: unknown $type %q", i, aw.Type)
		}
		if err := canRepo(ctx, coll.String(), string(wr.Action)); err != nil {
			return nil, err
		}
		if wr.Action != repo.ActionCreate {
			if wr.RKey, err = parseRKey(aw.RKey); err != nil {
				return nil, err
			}
		}
		if wr.Action != repo.ActionDelete {
			if err := s.checkRKeyType(coll, wr.RKey); err != nil {
				return nil, err
			}
		}
		if wr.Action != repo.ActionDelete {
			if wr.Record, statuses[i], err = s.prepareRecord(ctx, aw.Value, coll, in.Validate); err != nil {
				return nil, err
			}
		}
		writes[i] = wr
	}
	c, err := rp.Apply(ctx, writes, swapCommit)
	if err != nil {
		return nil, err
	}
	results := make([]applyWritesResult, len(writes))
	for i, wr := range writes {
		if wr.Action == repo.ActionDelete {
			results[i] = applyWritesResult{Type: applyWritesNS + "deleteResult"}
			continue
		}
		results[i] = applyWritesResult{
			Type:             applyWritesNS + string(wr.Action) + "Result",
			URI:              atURI(rp.DID(), wr.Collection, wr.RKey),
			CID:              c.Results[i].CID.String(),
			ValidationStatus: statuses[i],
		}
	}
	return &applyWritesOutput{Commit: newCommitMeta(c), Results: results}, nil
}

// foreignToAppView sends a public read of a repository not hosted here
// (its repo parameter) to the AppView, as the reference does; reads of
// ours go on to next.
func (s *server) foreignToAppView(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ident := r.URL.Query().Get("repo")
		if s.cfg.AppView.URL == "" {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := s.ourRepo(r.Context(), ident); err == nil {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := syntax.ParseAtIdentifier(ident); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		s.forwardPublic(w, r, s.cfg.AppView)
	})
}

type getRecordParams struct {
	Repo       string `query:"repo"`
	Collection string `query:"collection"`
	RKey       string `query:"rkey"`
	CID        string `query:"cid"`
}

// recordView is a record as getRecord and listRecords answer it.
type recordView struct {
	URI   string `json:"uri"`
	CID   string `json:"cid"`
	Value any    `json:"value"`
}

func (s *server) getRecord(ctx context.Context, p *getRecordParams) (*recordView, error) {
	rp, err := s.ourRepo(ctx, p.Repo)
	if err != nil {
		return nil, err
	}
	coll, err := parseCollection(p.Collection)
	if err != nil {
		return nil, err
	}
	rkey, err := parseRKey(p.RKey)
	if err != nil {
		return nil, err
	}
	want, err := parseOptCID("cid", p.CID)
	if err != nil {
		return nil, err
	}
	uri := atURI(rp.DID(), coll, rkey)
	rec, err := rp.GetRecord(coll, rkey)
	if err != nil {
		if errors.Is(err, repo.ErrRecordNotFound) {
			return nil, xerr(http.StatusBadRequest, "RecordNotFound", "Could not locate record: %s", uri)
		}
		return nil, err
	}
	if (want != nil && *want != rec.CID) || s.accounts.RecordTakedown(uri).Applied {
		return nil, xerr(http.StatusBadRequest, "RecordNotFound", "Could not locate record: %s", uri)
	}
	val, err := atdata.UnmarshalCBOR(rec.Data)
	if err != nil {
		return nil, fmt.Errorf("decoding stored record: %w", err)
	}
	return &recordView{URI: uri, CID: rec.CID.String(), Value: val}, nil
}

type listRecordsParams struct {
	Repo       string `query:"repo"`
	Collection string `query:"collection"`
	Reverse    bool   `query:"reverse"`
	Page       pageParams
}

type listRecordsOutput struct {
	Cursor  string       `json:"cursor,omitempty"`
	Records []recordView `json:"records"`
}

func (s *server) listRecords(ctx context.Context, p *listRecordsParams) (*listRecordsOutput, error) {
	rp, err := s.ourRepo(ctx, p.Repo)
	if err != nil {
		return nil, err
	}
	coll, err := parseCollection(p.Collection)
	if err != nil {
		return nil, err
	}
	if p.Page.Cursor != "" {
		if _, err := syntax.ParseRecordKey(p.Page.Cursor); err != nil {
			return nil, invalidRequest("Invalid cursor")
		}
	}
	recs, _, err := rp.ListRecords(coll, p.Page.Cursor, p.Page.Limit, !p.Reverse)
	if err != nil {
		return nil, err
	}
	out := &listRecordsOutput{Records: make([]recordView, 0, len(recs))}
	takedowns := s.accounts.RecordTakedownsUnder(atURI(rp.DID(), coll, ""))
	for _, rec := range recs {
		if takedowns && s.accounts.RecordTakedown(atURI(rp.DID(), coll, rec.RKey)).Applied {
			continue // taken down by the operator: not served
		}
		val, err := atdata.UnmarshalCBOR(rec.Data)
		if err != nil {
			return nil, fmt.Errorf("decoding stored record: %w", err)
		}
		out.Records = append(out.Records, recordView{URI: atURI(rp.DID(), coll, rec.RKey), CID: rec.CID.String(), Value: val})
	}
	// Like the reference, any non-empty page carries a cursor; the client
	// stops at an empty page.
	if len(recs) > 0 {
		out.Cursor = recs[len(recs)-1].RKey.String()
	}
	return out, nil
}

type describeRepoParams struct {
	Repo string `query:"repo"`
}

type describeRepoOutput struct {
	Handle          string   `json:"handle"`
	DID             string   `json:"did"`
	DIDDoc          any      `json:"didDoc"`
	Collections     []string `json:"collections"`
	HandleIsCorrect bool     `json:"handleIsCorrect"`
}

func (s *server) describeRepo(ctx context.Context, p *describeRepoParams) (*describeRepoOutput, error) {
	rp, err := s.ourRepo(ctx, p.Repo)
	if err != nil {
		return nil, err
	}
	acct, err := s.accounts.Account(ctx)
	if err != nil {
		return nil, err
	}
	colls, err := rp.Collections()
	if err != nil {
		return nil, err
	}
	pub, err := s.accounts.PublicKey()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(colls))
	for i, c := range colls {
		names[i] = c.String()
	}
	return &describeRepoOutput{
		Handle:          acct.Handle.String(),
		DID:             acct.DID.String(),
		DIDDoc:          identity.DIDWebDocument(acct.DID, acct.Handle, pub, s.cfg.PublicURL),
		Collections:     names,
		HandleIsCorrect: true,
	}, nil
}
