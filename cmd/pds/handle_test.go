package main

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	comatproto "github.com/bluesky-social/indigo/api/atproto"
	"github.com/did-method-plc/go-didplc"
	"github.com/gorilla/websocket"
	cbg "github.com/whyrusleeping/cbor-gen"
)

// handleWorld is a server whose hostname is itself a valid handle
// (pds.test), with its own handle domain, every lookup on the fake network,
// and every upstream on 127.0.0.1.
type handleWorld struct {
	s           *testServer
	net         *pxFakeNet
	did, access string
}

func newHandleWorld(t *testing.T) *handleWorld {
	t.Helper()
	appview := newFakeSvc(t, pxAppViewDID)
	relay := newFakeSvc(t, "did:web:relay.test")
	w := &handleWorld{net: newPxFakeNet(t)}
	w.s = startServer(t, map[string]string{
		"PDS_HOSTNAME":               "pds.test",
		"PDS_SERVICE_HANDLE_DOMAINS": ".pds.test",
		"PDS_BSKY_APP_VIEW_URL":      appview.URL(),
		"PDS_BSKY_APP_VIEW_DID":      pxAppViewDID,
		"PDS_REPORT_SERVICE_URL":     appview.URL(),
		"PDS_REPORT_SERVICE_DID":     pxAppViewDID,
		"PDS_CRAWLERS":               relay.URL(),
		// The well-known files of the fake network are on 127.0.0.1.
		"PDS_DEV_ALLOW_PRIVATE_UPSTREAMS": "true",
	})
	w.net.install(w.s)
	code, err := w.s.app.accounts.InviteCode()
	if err != nil {
		t.Fatal(err)
	}
	st, out := w.s.call(t, "POST", "com.atproto.server.createAccount", "", "", map[string]any{
		"handle": "alice.pds.test", "email": "alice@example.com", "password": "hunter2-hunter2", "inviteCode": code,
	})
	wantStatus(t, "createAccount", st, out, 200, "")
	w.did, w.access = out["did"].(string), out["accessJwt"].(string)
	return w
}

// handle is the account's handle as getSession tells it.
func (w *handleWorld) handle(t *testing.T) string {
	t.Helper()
	st, out := w.s.call(t, "GET", "com.atproto.server.getSession", w.access, "", nil)
	wantStatus(t, "getSession", st, out, 200, "")
	return out["handle"].(string)
}

// atprotoDID asks /.well-known/atproto-did as a client reaching host would.
func (w *handleWorld) atprotoDID(t *testing.T, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", w.s.URL+"/.well-known/atproto-did", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := pxClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// TestUpdateHandle: the hostname itself, a subdomain, custom domains proved
// by DNS TXT and by the well-known file are taken, each with one signed PLC
// operation and one #identity event; handles that do not point back are
// refused with nothing changed.
func TestUpdateHandle(t *testing.T) {
	w := newHandleWorld(t)
	const otherDID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
	w.net.setTXT("_atproto.alice.example.test", "did="+w.did)
	w.net.setWellKnown("alice.wk.test", w.did+"\nignored second line\n")
	w.net.setTXT("_atproto.evil.example.test", "did="+otherDID)
	w.net.setWellKnown("evil.wk.test", otherDID+"\n")
	w.net.setTXT("_atproto.two.example.test", "did="+w.did, "did="+w.did)

	rotation, err := w.s.app.cfg.RotationKey.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, handle string
		ok           bool
		want         string // the handle afterwards, if not the input
		wantError    string
	}{
		{"the hostname itself", "pds.test", true, "", ""},
		{"a subdomain", "bob.pds.test", true, "", ""},
		{"custom domain by DNS TXT", "Alice.Example.Test", true, "alice.example.test", ""},
		{"custom domain by well-known", "alice.wk.test", true, "", ""},
		{"DNS names another DID", "evil.example.test", false, "", "InvalidRequest"},
		{"well-known names another DID", "evil.wk.test", false, "", "InvalidRequest"},
		{"nothing points back", "nobody.example.test", false, "", "InvalidRequest"},
		{"two did= records", "two.example.test", false, "", "InvalidRequest"},
		{"the same handle again", "alice.wk.test", true, "", ""},
	}
	var identities []string // the #identity handles expected, in order
	identities = append(identities, "alice.pds.test")
	current := "alice.pds.test"
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := w.s.plc.Ops(w.did)
			code, out := w.s.call(t, "POST", "com.atproto.identity.updateHandle", w.access, "", map[string]any{"handle": st.handle})
			after := w.s.plc.Ops(w.did)
			if !st.ok {
				wantStatus(t, st.name, code, out, 400, st.wantError)
				if st.wantError == "InvalidRequest" && out["message"] != "External handle did not resolve to DID" {
					t.Fatalf("message %q", out["message"])
				}
				if h := w.handle(t); h != current {
					t.Fatalf("handle %s after a refusal, want %s", h, current)
				}
				if len(after) != len(before) {
					t.Fatalf("PLC log grew from %d to %d on a refusal", len(before), len(after))
				}
				return
			}
			wantStatus(t, st.name, code, out, 200, "")
			want := st.want
			if want == "" {
				want = st.handle
			}
			if h := w.handle(t); h != want {
				t.Fatalf("handle %s, want %s", h, want)
			}
			identities = append(identities, want)
			if want == current {
				// Re-announced, but the PLC document already says so.
				if len(after) != len(before) {
					t.Fatalf("PLC log grew from %d to %d for an unchanged handle", len(before), len(after))
				}
				return
			}
			current = want
			if len(after) != len(before)+1 {
				t.Fatalf("PLC log has %d operations, want %d", len(after), len(before)+1)
			}
			prev, op := before[len(before)-1], after[len(after)-1]
			idx, err := didplc.VerifySignatureAny(&op, prev.RotationKeys)
			if err != nil || prev.RotationKeys[idx] != rotation.DIDKey() {
				t.Fatalf("operation not signed by the rotation key: %v (key %d)", err, idx)
			}
			if op.Prev == nil || *op.Prev != prev.CID().String() {
				t.Fatalf("prev %v, want %s", op.Prev, prev.CID())
			}
			if len(op.AlsoKnownAs) == 0 || op.AlsoKnownAs[0] != "at://"+want {
				t.Fatalf("alsoKnownAs %v", op.AlsoKnownAs)
			}
			if strings.Join(op.RotationKeys, ",") != strings.Join(prev.RotationKeys, ",") ||
				op.VerificationMethods["atproto"] != prev.VerificationMethods["atproto"] ||
				op.Services["atproto_pds"] != prev.Services["atproto_pds"] {
				t.Fatalf("the operation changed more than the handle: %+v after %+v", op, prev)
			}
			// The new handle resolves here, locally; the old one no longer.
			code, out = w.s.call(t, "GET", "com.atproto.identity.resolveHandle", "", "handle="+url.QueryEscape(want), nil)
			if code != 200 || out["did"] != w.did {
				t.Fatalf("resolveHandle %s: %d %v", want, code, out)
			}
			if code, body := w.atprotoDID(t, want); code != 200 || body != w.did {
				t.Fatalf("atproto-did for %s: %d %q", want, code, body)
			}
		})
	}

	// The firehose has one #identity per change (and one for the repeat),
	// with the handle, and none for the refusals.
	var got []string
	for _, ev := range pxReadIdentities(t, w.s) {
		if ev.Did != w.did || ev.Handle == nil {
			t.Fatalf("#identity %+v", ev)
		}
		got = append(got, *ev.Handle)
	}
	if strings.Join(got, " ") != strings.Join(identities, " ") {
		t.Fatalf("#identity handles %v, want %v", got, identities)
	}
}

// TestUpdateHandleInvalid: handles refused for their form, before any
// lookup.
func TestUpdateHandleInvalid(t *testing.T) {
	w := newHandleWorld(t)
	cases := []struct{ handle, wantError string }{
		{"not a handle", "InvalidHandle"},
		{"alice.local", "InvalidHandle"},
		{"ab.pds.test", "InvalidHandle"},
		{"a.b.pds.test", "InvalidHandle"},
		{"averyveryverylonglabel.pds.test", "InvalidHandle"},
		{"", "InvalidHandle"},
	}
	before := len(w.s.plc.Ops(w.did))
	for _, tc := range cases {
		code, out := w.s.call(t, "POST", "com.atproto.identity.updateHandle", w.access, "", map[string]any{"handle": tc.handle})
		wantStatus(t, tc.handle, code, out, 400, tc.wantError)
	}
	if h := w.handle(t); h != "alice.pds.test" || len(w.s.plc.Ops(w.did)) != before {
		t.Fatalf("handle %s, %d PLC operations after refusals", h, len(w.s.plc.Ops(w.did)))
	}
	if n := len(pxReadIdentities(t, w.s)); n != 1 {
		t.Fatalf("%d #identity events, want the creation's only", n)
	}
}

// TestResolveHandle: our handle is answered locally, others by DNS or the
// well-known file, and a free name under our domain is nobody.
func TestResolveHandle(t *testing.T) {
	w := newHandleWorld(t)
	const carol, dave = "did:plc:ragtjsm2j2vknwkz3zp4oxrd", "did:web:dave.test"
	w.net.setTXT("_atproto.carol.other.test", "did="+carol)
	w.net.setWellKnown("dave.test", dave+"\n")
	cases := []struct {
		handle     string
		wantStatus int
		want       string // DID or error name
	}{
		{"alice.pds.test", 200, w.did},
		{"ALICE.pds.test", 200, w.did},
		{"carol.other.test", 200, carol},
		{"dave.test", 200, dave},
		{"nobody.pds.test", 400, "HandleNotFound"},
		{"pds.test", 400, "HandleNotFound"},
		{"unknown.other.test", 400, "HandleNotFound"},
		{"not a handle", 400, "InvalidRequest"},
	}
	for _, tc := range cases {
		code, out := w.s.call(t, "GET", "com.atproto.identity.resolveHandle", "", "handle="+url.QueryEscape(tc.handle), nil)
		if code != tc.wantStatus || (code == 200 && out["did"] != tc.want) || (code != 200 && out["error"] != tc.want) {
			t.Fatalf("%s: %d %v, want %d %s", tc.handle, code, out, tc.wantStatus, tc.want)
		}
	}
	// Our own handle never needs a lookup.
	if n := w.net.hitCount("/wk/alice.pds.test"); n != 0 {
		t.Fatalf("our handle was looked up over https %d times", n)
	}

	// /.well-known/atproto-did answers for the current handle only.
	for _, tc := range []struct {
		host string
		code int
	}{
		{"alice.pds.test", 200},
		{"ALICE.PDS.TEST", 200},
		{"alice.pds.test:443", 200},
		{"pds.test", 404},
		{"bob.pds.test", 404},
		{"carol.other.test", 404},
	} {
		code, body := w.atprotoDID(t, tc.host)
		if code != tc.code || (code == 200 && body != w.did) {
			t.Fatalf("atproto-did for Host %s: %d %q", tc.host, code, body)
		}
	}
}

// pxReadIdentities reads the firehose from the start until it is quiet and
// returns its #identity events.
func pxReadIdentities(t *testing.T, s *testServer) []comatproto.SyncSubscribeRepos_Identity {
	t.Helper()
	u, _ := url.Parse(s.URL)
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Host+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out []comatproto.SyncSubscribeRepos_Identity
	for {
		_ = conn.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return out // quiet: everything stored has been sent
		}
		typ, body := pxFrameType(t, msg)
		if typ != "#identity" {
			continue
		}
		var ev comatproto.SyncSubscribeRepos_Identity
		if err := ev.UnmarshalCBOR(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// pxFrameType decodes the header of an event-stream frame: its t, and the
// body bytes after it.
func pxFrameType(t *testing.T, msg []byte) (string, []byte) {
	t.Helper()
	r := bytes.NewReader(msg)
	cr := cbg.NewCborReader(r)
	maj, n, err := cr.ReadHeader()
	if err != nil || maj != cbg.MajMap {
		t.Fatalf("frame header: %v", err)
	}
	typ := ""
	for range n {
		k, err := cbg.ReadString(cr)
		if err != nil {
			t.Fatal(err)
		}
		switch k {
		case "t":
			if typ, err = cbg.ReadString(cr); err != nil {
				t.Fatal(err)
			}
		default: // op: a small integer, positive or negative
			if _, _, err := cr.ReadHeader(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return typ, msg[len(msg)-r.Len():]
}
