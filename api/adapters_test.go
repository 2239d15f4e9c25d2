package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/pdsbox/pds/lexicons"
)

func testServer(t *testing.T) *server {
	t.Helper()
	cat := lexicon.NewBaseCatalog()
	if err := cat.LoadEmbedFS(lexicons.FS); err != nil {
		t.Fatal(err)
	}
	return &server{lex: cat, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// queryParams is the parameter type of every query and stream route, so
// that each tag is checked against its lexicon below (a misspelt tag would
// silently read nothing).
var queryParams = map[string]any{
	"com.atproto.server.describeServer":                 noParams{},
	"com.atproto.server.getSession":                     noParams{},
	"com.atproto.server.listAppPasswords":               noParams{},
	"com.atproto.server.checkAccountStatus":             noParams{},
	"com.atproto.server.getServiceAuth":                 getServiceAuthParams{},
	"com.atproto.admin.getAccountInfo":                  getAccountInfoParams{},
	"com.atproto.admin.getAccountInfos":                 getAccountInfosParams{},
	"com.atproto.admin.getInviteCodes":                  noParams{},
	"com.atproto.admin.getSubjectStatus":                getSubjectStatusParams{},
	"com.atproto.repo.getRecord":                        getRecordParams{},
	"com.atproto.repo.listRecords":                      listRecordsParams{},
	"com.atproto.repo.describeRepo":                     describeRepoParams{},
	"com.atproto.repo.listMissingBlobs":                 listMissingBlobsParams{},
	"com.atproto.identity.resolveHandle":                resolveHandleParams{},
	"com.atproto.identity.resolveDid":                   resolveDidParams{},
	"com.atproto.identity.getRecommendedDidCredentials": noParams{},
	"app.bsky.actor.getPreferences":                     noParams{},
	"com.atproto.sync.getRepo":                          getRepoParams{},
	"com.atproto.sync.getLatestCommit":                  didParams{},
	"com.atproto.sync.getRecord":                        syncGetRecordParams{},
	"com.atproto.sync.getBlocks":                        getBlocksParams{},
	"com.atproto.sync.listRepos":                        listReposParams{},
	"com.atproto.sync.getRepoStatus":                    didParams{},
	"com.atproto.sync.getHead":                          didParams{},
	"com.atproto.sync.getCheckout":                      didParams{},
	"com.atproto.sync.getBlob":                          getBlobParams{},
	"com.atproto.sync.listBlobs":                        listBlobsParams{},
	"com.atproto.sync.subscribeRepos":                   subscribeReposParams{},
}

// TestQueryParamsMatchLexicons holds every query tag to a parameter of its
// method's lexicon, and every query or stream route in router.go to a row
// of queryParams.
func TestQueryParamsMatchLexicons(t *testing.T) {
	s := testServer(t)
	for nsid, p := range queryParams {
		props := s.paramSchemas(nsid)
		for name, typ := range queryTags(reflect.TypeOf(p)) {
			if _, ok := props[name]; !ok {
				t.Errorf("%s: parameter %q is not in the lexicon", nsid, name)
			}
			// setParam's kinds: anything else would panic on a request.
			switch k := typ.String(); k {
			case "string", "bool", "int", "int64", "[]string", "*string", "*bool", "*int", "*int64":
			default:
				t.Errorf("%s: parameter %q is a %s, which setParam does not decode", nsid, name, k)
			}
		}
	}
	src, err := os.ReadFile("router.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := regexp.MustCompile(`"/xrpc/([a-zA-Z.]+)", (query|stream|firehose)\(`).FindAllStringSubmatch(string(src), -1)
	if len(routes) < 20 {
		t.Fatalf("found %d query routes in router.go: the pattern is stale", len(routes))
	}
	for _, m := range routes {
		if _, ok := queryParams[m[1]]; !ok {
			t.Errorf("%s is a %s route without a row in queryParams", m[1], m[2])
		}
	}
}

// queryTags maps the query tags of t (and of its untagged struct fields)
// to their field types.
func queryTags(t reflect.Type) map[string]reflect.Type {
	tags := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, ok := f.Tag.Lookup("query"); ok {
			tags[name] = f.Type
		} else if f.Type.Kind() == reflect.Struct {
			for name, typ := range queryTags(f.Type) {
				tags[name] = typ
			}
		}
	}
	return tags
}

func TestDecodeParams(t *testing.T) {
	s := testServer(t)
	decode := func(nsid, rawQuery string, p any) error {
		r := httptest.NewRequest(http.MethodGet, "/xrpc/"+nsid+"?"+rawQuery, nil)
		return s.decodeParams(r, p)
	}
	t.Run("lexicon defaults and values", func(t *testing.T) {
		var p listRecordsParams
		if err := decode("com.atproto.repo.listRecords", "repo=did:plc:x&collection=app.bsky.feed.post&cursor=", &p); err != nil {
			t.Fatal(err)
		}
		// limit's default is the lexicon's (50); an empty cursor is none.
		if p.Page.Limit != 50 || p.Page.Cursor != "" || p.Repo != "did:plc:x" || p.Collection != "app.bsky.feed.post" || p.Reverse {
			t.Errorf("got %+v", p)
		}
		p = listRecordsParams{}
		if err := decode("com.atproto.repo.listRecords", "limit=7&reverse=true&cursor=3k", &p); err != nil {
			t.Fatal(err)
		}
		if p.Page.Limit != 7 || !p.Reverse || p.Page.Cursor != "3k" {
			t.Errorf("got %+v", p)
		}
	})
	t.Run("pointer: absent or set", func(t *testing.T) {
		var p getServiceAuthParams
		if err := decode("com.atproto.server.getServiceAuth", "aud=did:web:x", &p); err != nil {
			t.Fatal(err)
		}
		if p.Exp != nil {
			t.Errorf("exp = %d, want absent", *p.Exp)
		}
		if err := decode("com.atproto.server.getServiceAuth", "aud=did:web:x&exp=0", &p); err != nil {
			t.Fatal(err)
		}
		if p.Exp == nil || *p.Exp != 0 {
			t.Errorf("exp = %v, want 0", p.Exp)
		}
	})
	t.Run("repeated values", func(t *testing.T) {
		var p getBlocksParams
		if err := decode("com.atproto.sync.getBlocks", "did=did:plc:x&cids=a&cids=b", &p); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p.CIDs, []string{"a", "b"}) {
			t.Errorf("cids = %q", p.CIDs)
		}
	})
	for _, tc := range []struct{ nsid, query, want string }{
		{"com.atproto.repo.listRecords", "limit=ten", "Params/limit must be an integer"},
		{"com.atproto.repo.listRecords", "reverse=yes", "Params/reverse must be a boolean (true or false)"},
		{"com.atproto.repo.listRecords", "limit=%zz", "Invalid query string"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var p listRecordsParams
			err := decode(tc.nsid, tc.query, &p)
			var xe *XRPCError
			if !errors.As(err, &xe) || xe.Status != 400 || !strings.HasPrefix(xe.Message, tc.want) {
				t.Errorf("err = %v, want 400 %q", err, tc.want)
			}
		})
	}
}

type adapterIn struct {
	Name string `json:"name"`
}

type adapterOut struct {
	Greeting string `json:"greeting"`
}

type optionalIn struct {
	Name string `json:"name"`
}

func (optionalIn) bodyOptional() {}

// call serves one request with h and returns the status, Content-Type and
// body.
func call(h http.HandlerFunc, method, target, contentType, body string) (int, string, string) {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h(w, r)
	return w.Code, w.Header().Get("Content-Type"), w.Body.String()
}

func TestProcedureAdapter(t *testing.T) {
	s := testServer(t)
	greet := procedure(s, 100, func(_ context.Context, in *adapterIn) (*adapterOut, error) {
		if in.Name == "" {
			return nil, invalidRequest("name is required")
		}
		return &adapterOut{Greeting: "hello " + in.Name}, nil
	})
	silent := procedure(s, 100, func(_ context.Context, in *adapterIn) (*noOutput, error) { return nil, nil })
	optional := procedure(s, 100, func(_ context.Context, in *optionalIn) (*adapterOut, error) {
		return &adapterOut{Greeting: "hello " + in.Name}, nil
	})
	for _, tc := range []struct {
		name            string
		h               http.HandlerFunc
		ct, body        string
		status          int
		wantCT, wantOut string
	}{
		{"typed output", greet, "application/json", `{"name":"bob"}`, 200, "application/json; charset=utf-8", `{"greeting":"hello bob"}` + "\n"},
		{"handler error", greet, "application/json", `{}`, 400, "application/json; charset=utf-8", `{"error":"InvalidRequest","message":"name is required"}` + "\n"},
		{"input type", greet, "application/json", `{"name":1}`, 400, "application/json; charset=utf-8", `{"error":"InvalidRequest","message":"Input/name must be a string"}` + "\n"},
		{"body over the limit", greet, "application/json", `{"name":"` + strings.Repeat("x", 200) + `"}`, 413, "application/json; charset=utf-8", `{"error":"PayloadTooLarge","message":"request entity too large"}` + "\n"},
		{"no body where one is needed", greet, "", "", 400, "application/json; charset=utf-8", `{"error":"InvalidRequest","message":"A request body is expected but none was provided"}` + "\n"},
		{"no output: empty 200", silent, "application/json", `{"name":"x"}`, 200, "", ""},
		{"optional input absent", optional, "", "", 200, "application/json; charset=utf-8", `{"greeting":"hello "}` + "\n"},
		{"optional input present", optional, "application/json", `{"name":"al"}`, 200, "application/json; charset=utf-8", `{"greeting":"hello al"}` + "\n"},
		{"optional input still checked", optional, "text/plain", `x`, 400, "application/json; charset=utf-8", `{"error":"InvalidRequest","message":"Wrong request encoding (Content-Type): text/plain"}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ct, body := call(tc.h, http.MethodPost, "/xrpc/x.y.z", tc.ct, tc.body)
			if status != tc.status || ct != tc.wantCT || body != tc.wantOut {
				t.Errorf("got %d %q %q, want %d %q %q", status, ct, body, tc.status, tc.wantCT, tc.wantOut)
			}
		})
	}
}

func TestQueryAndStreamAdapters(t *testing.T) {
	s := testServer(t)
	list := query(s, func(ctx context.Context, p *listBlobsParams) (*listBlobsOutput, error) {
		// The handler sees its request's response headers and request.
		responseHeader(ctx).Set("X-Limit", requestOf(ctx).URL.Query().Get("limit"))
		return &listBlobsOutput{Cursor: p.Page.Cursor, CIDs: []string{p.DID}}, nil
	})
	status, _, body := call(list, http.MethodGet, "/xrpc/com.atproto.sync.listBlobs?did=did:plc:x&cursor=c", "", "")
	var out listBlobsOutput
	if status != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Cursor != "c" || len(out.CIDs) != 1 || out.CIDs[0] != "did:plc:x" {
		t.Errorf("query: %d %s", status, body)
	}

	failing := stream(s, func(w http.ResponseWriter, r *http.Request, p *didParams) error {
		if p.DID == "" {
			return xerr(http.StatusBadRequest, "RepoNotFound", "no repo")
		}
		w.Header().Set("Content-Type", carContentType)
		_, err := w.Write([]byte("car bytes"))
		return err
	})
	if status, _, body := call(failing, http.MethodGet, "/xrpc/com.atproto.sync.getCheckout", "", ""); status != 400 || !strings.Contains(body, `"error":"RepoNotFound"`) {
		t.Errorf("stream error: %d %s", status, body)
	}
	if status, ct, body := call(failing, http.MethodGet, "/xrpc/com.atproto.sync.getCheckout?did=did:plc:x", "", ""); status != 200 || ct != carContentType || body != "car bytes" {
		t.Errorf("stream: %d %q %q", status, ct, body)
	}
}

func TestRawInputAdapter(t *testing.T) {
	s := testServer(t)
	echo := rawInput(s, func(_ context.Context, in *rawBody) (*adapterOut, error) {
		b, err := io.ReadAll(in.limit(4))
		if err != nil {
			return nil, err
		}
		return &adapterOut{Greeting: in.ContentType + ":" + string(b)}, nil
	})
	if status, _, body := call(echo, http.MethodPost, "/xrpc/x.y.z", "application/octet-stream", "abcd"); status != 200 || body != `{"greeting":"application/octet-stream:abcd"}`+"\n" {
		t.Errorf("raw: %d %s", status, body)
	}
	if status, _, body := call(echo, http.MethodPost, "/xrpc/x.y.z", "application/octet-stream", "abcde"); status != 413 || !strings.Contains(body, "PayloadTooLarge") {
		t.Errorf("raw over its limit: %d %s", status, body)
	}
}
