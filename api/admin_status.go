package api

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/ipfs/go-cid"
	"github.com/pdsbox/pds/account"
)

// updateSubjectStatus and getSubjectStatus: the operator's takedowns, as
// pdsadmin and moderation services call them. The subject is the account
// (#repoRef: its status becomes takendown, announced by #account), a
// record (strongRef) or a blob (#repoBlobRef).

const (
	typeRepoRef     = "com.atproto.admin.defs#repoRef"
	typeStrongRef   = "com.atproto.repo.strongRef"
	typeRepoBlobRef = "com.atproto.admin.defs#repoBlobRef"
)

type subjectInput struct {
	Type      string `json:"$type"`
	DID       string `json:"did"`
	URI       string `json:"uri"`
	CID       string `json:"cid"`
	RecordURI string `json:"recordUri"`
}

type statusAttr struct {
	Applied bool   `json:"applied"`
	Ref     string `json:"ref,omitempty"`
}

type updateSubjectStatusInput struct {
	Subject     json.RawMessage `json:"subject"`
	Takedown    *statusAttr     `json:"takedown"`
	Deactivated *statusAttr     `json:"deactivated"`
}

// subjectStatusOutput is the answer of updateSubjectStatus and
// getSubjectStatus.
type subjectStatusOutput struct {
	Subject     any         `json:"subject"`
	Takedown    *statusAttr `json:"takedown,omitempty"`
	Deactivated *statusAttr `json:"deactivated,omitempty"`
}

func (a *adminAPI) updateSubjectStatus(ctx context.Context, in *updateSubjectStatusInput) (*subjectStatusOutput, error) {
	var sub subjectInput
	if len(in.Subject) == 0 || json.Unmarshal(in.Subject, &sub) != nil {
		return nil, invalidRequest("subject is required")
	}
	if in.Takedown != nil && len(in.Takedown.Ref) > account.MaxTakedownRef {
		return nil, invalidRequest("takedown ref is too long")
	}
	if in.Deactivated != nil {
		// The reference does not act on it either ("not implemented").
		return nil, invalidRequest("the deactivated attribute is not supported; the account deactivates itself")
	}
	if err := a.applySubjectStatus(ctx, &sub, in.Takedown); err != nil {
		return nil, err
	}
	return &subjectStatusOutput{Subject: in.Subject, Takedown: in.Takedown}, nil
}

// applySubjectStatus checks the subject and applies a takedown (or its
// reversal) to it; a nil takedown changes nothing.
func (a *adminAPI) applySubjectStatus(ctx context.Context, sub *subjectInput, takedown *statusAttr) error {
	switch sub.Type {
	case typeRepoRef:
		if _, err := a.account(ctx, sub.DID); err != nil {
			return err
		}
		if takedown == nil {
			return nil
		}
		if takedown.Applied {
			if err := a.s.accounts.SetAccountTakedownRef(takedown.Ref); err != nil {
				return err
			}
			if err := a.s.accounts.Takedown(ctx); err != nil {
				return err
			}
			// As the reference: the account's sessions end.
			return a.s.auth.RevokeAllSessions(ctx)
		}
		if err := a.s.accounts.ReverseTakedown(ctx); err != nil {
			return err
		}
		return a.s.accounts.SetAccountTakedownRef("")
	case typeStrongRef:
		uri, err := a.recordURI(ctx, sub.URI)
		if err != nil {
			return err
		}
		if takedown == nil {
			return nil
		}
		return a.s.accounts.SetRecordTakedown(uri, account.SubjectStatus{Applied: takedown.Applied, Ref: takedown.Ref, CID: sub.CID})
	case typeRepoBlobRef:
		if _, err := a.account(ctx, sub.DID); err != nil {
			return err
		}
		c, err := cid.Decode(sub.CID)
		if err != nil {
			return invalidRequest("invalid blob cid")
		}
		if takedown == nil {
			return nil
		}
		return a.s.accounts.SetBlobTakedown(c.String(), account.SubjectStatus{Applied: takedown.Applied, Ref: takedown.Ref})
	default:
		return invalidRequest("Invalid subject")
	}
}

// recordURI checks that raw is an at:// URI of a record of the account.
func (a *adminAPI) recordURI(ctx context.Context, raw string) (string, error) {
	u, err := syntax.ParseATURI(raw)
	if err != nil || u.RecordKey() == "" || u.Collection() == "" {
		return "", invalidRequest("invalid record uri")
	}
	did, err := u.Authority().AsDID()
	if err != nil {
		return "", invalidRequest("the record uri must name a DID")
	}
	if _, err := a.account(ctx, did.String()); err != nil {
		return "", err
	}
	return "at://" + did.String() + "/" + u.Collection().String() + "/" + u.RecordKey().String(), nil
}

type getSubjectStatusParams struct {
	DID  string `query:"did"`
	URI  string `query:"uri"`
	Blob string `query:"blob"`
}

func (a *adminAPI) getSubjectStatus(ctx context.Context, p *getSubjectStatusParams) (*subjectStatusOutput, error) {
	switch {
	case p.Blob != "":
		acct, err := a.account(ctx, p.DID)
		if err != nil {
			return nil, err
		}
		c, err := cid.Decode(p.Blob)
		if err != nil {
			return nil, invalidRequest("invalid blob cid")
		}
		st := a.s.accounts.BlobTakedown(c.String())
		return &subjectStatusOutput{
			Subject:  map[string]any{"$type": typeRepoBlobRef, "did": acct.DID.String(), "cid": c.String()},
			Takedown: &statusAttr{Applied: st.Applied, Ref: st.Ref},
		}, nil
	case p.URI != "":
		uri, err := a.recordURI(ctx, p.URI)
		if err != nil {
			return nil, err
		}
		st := a.s.accounts.RecordTakedown(uri)
		sub := map[string]any{"$type": typeStrongRef, "uri": uri}
		if cidStr := a.recordCID(uri); cidStr != "" {
			sub["cid"] = cidStr
		} else if st.CID != "" {
			sub["cid"] = st.CID
		} else {
			return nil, xerr(http.StatusBadRequest, "NotFound", "Subject not found")
		}
		return &subjectStatusOutput{Subject: sub, Takedown: &statusAttr{Applied: st.Applied, Ref: st.Ref}}, nil
	case p.DID != "":
		acct, err := a.account(ctx, p.DID)
		if err != nil {
			return nil, err
		}
		st, err := a.s.accounts.Status(ctx)
		if err != nil {
			return nil, err
		}
		out := &subjectStatusOutput{
			Subject:  map[string]any{"$type": typeRepoRef, "did": acct.DID.String()},
			Takedown: &statusAttr{Applied: st == account.StatusTakendown, Ref: a.s.accounts.AccountTakedownRef()},
		}
		if st == account.StatusDeactivated {
			out.Deactivated = &statusAttr{Applied: true}
		}
		return out, nil
	default:
		return nil, invalidRequest("No provided subject")
	}
}

// recordCID is the current CID of the record at uri ("" if there is none).
func (a *adminAPI) recordCID(uri string) string {
	u, err := syntax.ParseATURI(uri)
	if err != nil {
		return ""
	}
	rp, err := a.s.accounts.Repo()
	if err != nil {
		return ""
	}
	rec, err := rp.GetRecord(u.Collection(), u.RecordKey())
	if err != nil {
		return ""
	}
	return rec.CID.String()
}
