package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/lexicon"
)

// The shapes of a route. Every XRPC handler is one of these, and the route
// table in router.go names the shape of each route:
//
//   - query: typed parameters from the URL, typed output as JSON;
//   - procedure: typed JSON input, typed output as JSON (or an empty 200);
//   - rawInput: a body taken as bytes (uploadBlob, importRepo), typed output;
//   - stream: typed parameters, a body written by the handler (CARs, blobs);
//   - firehose: typed parameters, then a websocket (subscribeRepos);
//   - proxied methods and pages (wellknown.go) are plain
//     http.HandlerFuncs, declared as such in the table.
//
// Handlers of the first three shapes are func(ctx, *In) (*Out, error)
// bodies: errors go through writeError, output through writeJSON.

// exchangeKey holds the request of the call in its context, for the few
// handlers that need more of it than their input: the client address,
// the credentials of the session routes, the response headers a rate
// limit sets.
const exchangeKey ctxKey = 2

type exchange struct {
	r      *http.Request
	header http.Header
}

func withExchange(w http.ResponseWriter, r *http.Request) context.Context {
	return context.WithValue(r.Context(), exchangeKey, &exchange{r: r, header: w.Header()})
}

// requestOf is the HTTP request of the call a handler serves.
func requestOf(ctx context.Context) *http.Request {
	return ctx.Value(exchangeKey).(*exchange).r
}

// responseHeader is the header of the answer of the call a handler
// serves: set before the adapter writes the body.
func responseHeader(ctx context.Context) http.Header {
	return ctx.Value(exchangeKey).(*exchange).header
}

// query adapts an XRPC query: its parameters, already held to the lexicon
// by checkQueryParams, are decoded into P by their `query:"name"` tags
// (with the lexicon's defaults), and do's output is answered as JSON.
func query[P, Out any](s *server, do func(context.Context, *P) (*Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p P
		if err := s.decodeParams(r, &p); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		out, err := do(withExchange(w, r), &p)
		answer(s, w, r, out, err)
	}
}

// procedure adapts a JSON procedure: a body of at most limit bytes is
// decoded into In (decodeJSON), and do's output is answered as JSON. A nil
// output answers 200 with an empty body, as the reference does for
// procedures without output.
func procedure[In, Out any](s *server, limit int64, do func(context.Context, *In) (*Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if _, optional := any(in).(bodyOptional); !optional || r.ContentLength != 0 {
			if err := decodeJSON(w, r, limit, &in); err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		out, err := do(withExchange(w, r), &in)
		answer(s, w, r, out, err)
	}
}

// bodyOptional marks an input a procedure may be called without: a
// request with no body leaves it zero.
type bodyOptional interface{ bodyOptional() }

// action adapts a procedure without input (requestEmailConfirmation,
// activateAccount, refreshSession...): the body is not read.
func action[Out any](s *server, do func(context.Context) (*Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		out, err := do(withExchange(w, r))
		answer(s, w, r, out, err)
	}
}

// noOutput is the output of a procedure whose lexicon has none; its
// handler returns a nil *noOutput.
type noOutput struct{}

// answer writes a handler's output or its error.
func answer[Out any](s *server, w http.ResponseWriter, r *http.Request, out *Out, err error) {
	switch {
	case err != nil:
		writeError(w, r, s.log, err)
	case out == nil:
		w.WriteHeader(http.StatusOK)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

// rawBody is the input of a procedure that takes its body as bytes.
type rawBody struct {
	Body            io.ReadCloser
	ContentType     string
	ContentEncoding string
	// Length is the declared Content-Length (-1: unknown).
	Length int64
	w      http.ResponseWriter // for http.MaxBytesReader
}

// limit bounds the body at n bytes (http.MaxBytesReader: the connection
// is closed after the answer rather than drained).
func (b *rawBody) limit(n int64) io.Reader {
	return http.MaxBytesReader(b.w, b.Body, n)
}

// rawInput adapts a procedure whose input is not JSON (uploadBlob,
// importRepo): do reads the body itself; its output is answered as JSON.
func rawInput[Out any](s *server, do func(context.Context, *rawBody) (*Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in := &rawBody{Body: r.Body, ContentType: r.Header.Get("Content-Type"), ContentEncoding: r.Header.Get("Content-Encoding"), Length: r.ContentLength, w: w}
		out, err := do(withExchange(w, r), in)
		answer(s, w, r, out, err)
	}
}

// stream adapts a query whose output is bytes the handler writes itself
// (CARs, blobs): the parameters are decoded as for query, and an error
// returned before anything was written is answered as an XRPC error.
func stream[P any](s *server, do func(w http.ResponseWriter, r *http.Request, p *P) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p P
		err := s.decodeParams(r, &p)
		if err == nil {
			err = do(w, r.WithContext(withExchange(w, r)), &p)
		}
		if err != nil {
			writeError(w, r, s.log, err)
		}
	}
}

// decodeParams fills the `query`-tagged fields of the struct p points to
// from r's query string, taking a missing (or empty) value from the
// lexicon's default. The values were held to the lexicon already
// (checkQueryParams); a value that still does not parse is the client's
// error.
func (s *server) decodeParams(r *http.Request, p any) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return invalidRequest("Invalid query string: %s", strings.TrimPrefix(err.Error(), "invalid "))
	}
	return setParams(reflect.ValueOf(p).Elem(), q, s.paramSchemas(strings.TrimPrefix(r.URL.Path, "/xrpc/")))
}

// pageParams are the paging parameters of the list queries, a Page field
// of their parameters.
type pageParams struct {
	Limit  int    `query:"limit"`
	Cursor string `query:"cursor"`
}

// setParams fills the tagged fields of the struct v, and of its untagged
// struct fields (exported: reflect sets only those).
func setParams(v reflect.Value, q url.Values, props map[string]lexicon.SchemaDef) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, ok := f.Tag.Lookup("query")
		if !ok && f.Type.Kind() == reflect.Struct {
			if err := setParams(v.Field(i), q, props); err != nil {
				return err
			}
			continue
		}
		if !ok {
			continue
		}
		vals := q[name]
		if !hasValue(vals) {
			vals = lexiconDefault(props[name])
		}
		if err := setParam(v.Field(i), "Params/"+name, vals); err != nil {
			return err
		}
	}
	return nil
}

// paramSchemas are the parameters of the query or subscription nsid
// (nil if unknown).
func (s *server) paramSchemas(nsid string) map[string]lexicon.SchemaDef {
	if s.lex == nil {
		return nil
	}
	sch, err := s.lex.Resolve(nsid)
	if err != nil {
		return nil
	}
	switch d := sch.Def.(type) {
	case lexicon.SchemaQuery:
		if d.Parameters != nil {
			return d.Parameters.Properties
		}
	case lexicon.SchemaSubscription:
		if d.Parameters != nil {
			return d.Parameters.Properties
		}
	}
	return nil
}

// lexiconDefault is a parameter's default, as a query string spells it.
func lexiconDefault(def lexicon.SchemaDef) []string {
	switch d := def.Inner.(type) {
	case lexicon.SchemaInteger:
		if d.Default != nil {
			return []string{strconv.Itoa(*d.Default)}
		}
	case lexicon.SchemaBoolean:
		if d.Default != nil {
			return []string{strconv.FormatBool(*d.Default)}
		}
	case lexicon.SchemaString:
		if d.Default != nil {
			return []string{*d.Default}
		}
	}
	return nil
}

// setParam sets a string, bool, int or []string field (or a pointer to
// one of the first three, nil when absent) from vals; absent values leave
// it zero.
func setParam(f reflect.Value, path string, vals []string) error {
	if f.Kind() == reflect.Slice {
		f.Set(reflect.ValueOf(vals))
		return nil
	}
	if !hasValue(vals) {
		return nil
	}
	if f.Kind() == reflect.Pointer {
		f.Set(reflect.New(f.Type().Elem()))
		f = f.Elem()
	}
	v := vals[0]
	switch f.Kind() {
	case reflect.String:
		f.SetString(v)
	case reflect.Bool:
		b, err := strconv.ParseBool(v)
		if err != nil || (v != "true" && v != "false") {
			return invalidRequest("%s must be a boolean (true or false)", path)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return invalidRequest("%s must be an integer", path)
		}
		f.SetInt(n)
	default:
		panic(fmt.Sprintf("api: query parameter %s of unsupported kind %s", path, f.Kind()))
	}
	return nil
}

// noParams is the parameters of a query whose lexicon has none.
type noParams struct{}

// firehose adapts a subscription (subscribeRepos): its parameters are
// decoded as for query, an error returned before the websocket upgrade is
// answered as an XRPC error, and after it the handler speaks the
// subscription's own frames.
func firehose[P any](s *server, do func(w http.ResponseWriter, r *http.Request, p *P) error) http.HandlerFunc {
	return stream(s, do)
}

// proxied and page name the shape of a route whose handler answers for
// itself, so that the route table shows every route's shape: methods
// relayed to another service (getFeed, registerPush), and the pages and
// well-known documents.
func proxied(h http.HandlerFunc) http.HandlerFunc { return h }

func page(h http.HandlerFunc) http.HandlerFunc { return h }
