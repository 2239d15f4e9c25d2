package api

import (
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

func (a *adminAPI) updateSubjectStatus(w http.ResponseWriter, r *http.Request) {
	var in updateSubjectStatusInput
	if err := decodeJSON(w, r, maxJSONBody, &in); err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	var sub subjectInput
	if len(in.Subject) == 0 || json.Unmarshal(in.Subject, &sub) != nil {
		writeError(w, r, a.s.log, invalidRequest("subject is required"))
		return
	}
	if in.Takedown != nil && len(in.Takedown.Ref) > account.MaxTakedownRef {
		writeError(w, r, a.s.log, invalidRequest("takedown ref is too long"))
		return
	}
	if in.Deactivated != nil {
		// The reference does not act on it either ("not implemented").
		writeError(w, r, a.s.log, invalidRequest("the deactivated attribute is not supported; the account deactivates itself"))
		return
	}
	ctx := r.Context()
	out := map[string]any{"subject": in.Subject}
	err := func() error {
		switch sub.Type {
		case typeRepoRef:
			if _, err := a.account(r, sub.DID); err != nil {
				return err
			}
			if in.Takedown == nil {
				return nil
			}
			if in.Takedown.Applied {
				if err := a.s.accounts.SetAccountTakedownRef(in.Takedown.Ref); err != nil {
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
			uri, err := a.recordURI(r, sub.URI)
			if err != nil {
				return err
			}
			if in.Takedown == nil {
				return nil
			}
			return a.s.accounts.SetRecordTakedown(uri, account.SubjectStatus{Applied: in.Takedown.Applied, Ref: in.Takedown.Ref, CID: sub.CID})
		case typeRepoBlobRef:
			if _, err := a.account(r, sub.DID); err != nil {
				return err
			}
			c, err := cid.Decode(sub.CID)
			if err != nil {
				return invalidRequest("invalid blob cid")
			}
			if in.Takedown == nil {
				return nil
			}
			return a.s.accounts.SetBlobTakedown(c.String(), account.SubjectStatus{Applied: in.Takedown.Applied, Ref: in.Takedown.Ref})
		default:
			return invalidRequest("Invalid subject")
		}
	}()
	if err != nil {
		writeError(w, r, a.s.log, err)
		return
	}
	if in.Takedown != nil {
		out["takedown"] = in.Takedown
	}
	writeJSON(w, http.StatusOK, out)
}

// recordURI checks that raw is an at:// URI of a record of the account.
func (a *adminAPI) recordURI(r *http.Request, raw string) (string, error) {
	u, err := syntax.ParseATURI(raw)
	if err != nil || u.RecordKey() == "" || u.Collection() == "" {
		return "", invalidRequest("invalid record uri")
	}
	did, err := u.Authority().AsDID()
	if err != nil {
		return "", invalidRequest("the record uri must name a DID")
	}
	if _, err := a.account(r, did.String()); err != nil {
		return "", err
	}
	return "at://" + did.String() + "/" + u.Collection().String() + "/" + u.RecordKey().String(), nil
}

func (a *adminAPI) getSubjectStatus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ctx := r.Context()
	err := func() error {
		switch {
		case q.Get("blob") != "":
			acct, err := a.account(r, q.Get("did"))
			if err != nil {
				return err
			}
			c, err := cid.Decode(q.Get("blob"))
			if err != nil {
				return invalidRequest("invalid blob cid")
			}
			st := a.s.accounts.BlobTakedown(c.String())
			writeJSON(w, http.StatusOK, map[string]any{
				"subject":  map[string]any{"$type": typeRepoBlobRef, "did": acct.DID.String(), "cid": c.String()},
				"takedown": statusAttr{Applied: st.Applied, Ref: st.Ref},
			})
			return nil
		case q.Get("uri") != "":
			uri, err := a.recordURI(r, q.Get("uri"))
			if err != nil {
				return err
			}
			st := a.s.accounts.RecordTakedown(uri)
			sub := map[string]any{"$type": typeStrongRef, "uri": uri}
			if cidStr := a.recordCID(uri); cidStr != "" {
				sub["cid"] = cidStr
			} else if st.CID != "" {
				sub["cid"] = st.CID
			} else {
				return xerr(http.StatusBadRequest, "NotFound", "Subject not found")
			}
			writeJSON(w, http.StatusOK, map[string]any{"subject": sub, "takedown": statusAttr{Applied: st.Applied, Ref: st.Ref}})
			return nil
		case q.Get("did") != "":
			acct, err := a.account(r, q.Get("did"))
			if err != nil {
				return err
			}
			st, err := a.s.accounts.Status(ctx)
			if err != nil {
				return err
			}
			out := map[string]any{
				"subject":  map[string]any{"$type": typeRepoRef, "did": acct.DID.String()},
				"takedown": statusAttr{Applied: st == account.StatusTakendown, Ref: a.s.accounts.AccountTakedownRef()},
			}
			if st == account.StatusDeactivated {
				out["deactivated"] = statusAttr{Applied: true}
			}
			writeJSON(w, http.StatusOK, out)
			return nil
		default:
			return invalidRequest("No provided subject")
		}
	}()
	if err != nil {
		writeError(w, r, a.s.log, err)
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
