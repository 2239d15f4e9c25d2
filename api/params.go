package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/bluesky-social/indigo/atproto/lexicon"
)

// checkQueryParams holds the query string of every local query and
// subscription to its lexicon's parameters (required, type, format,
// length, range, enum), answering 400 InvalidRequest naming the parameter,
// in the reference's words ("Params/limit must be an integer"). Proxied
// methods are left to the service that answers them; parameters the
// lexicon does not name are ignored, as the reference ignores them.
//
// Public methods are checked here; a method with a permission is checked
// by requireAuth once the caller is known (paramsAfterAuth), so that an
// anonymous caller learns nothing before AuthMissing.
func (s *server) checkQueryParams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if nsid, ok := s.localQuery(r); ok && !s.authed[nsid] {
			if err := s.validateParams(nsid, r.URL.RawQuery); err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// paramsAfterAuth is checkQueryParams for a method with a permission,
// called by requireAuth after the caller is authenticated.
func (s *server) paramsAfterAuth(r *http.Request) error {
	if nsid, ok := s.localQuery(r); ok && s.authed[nsid] {
		return s.validateParams(nsid, r.URL.RawQuery)
	}
	return nil
}

// localQuery returns the NSID of a GET (or HEAD) of a query served here.
func (s *server) localQuery(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", false
	}
	nsid, ok := strings.CutPrefix(r.URL.Path, "/xrpc/")
	return nsid, ok && s.local[nsid] == http.MethodGet
}

// validateParams checks a raw query string against the parameters of the
// query or subscription nsid; a method without a lexicon passes.
func (s *server) validateParams(nsid, rawQuery string) error {
	if s.lex == nil {
		return nil
	}
	sch, err := s.lex.Resolve(nsid)
	if err != nil {
		return nil
	}
	var params *lexicon.SchemaParams
	switch d := sch.Def.(type) {
	case lexicon.SchemaQuery:
		params = d.Parameters
	case lexicon.SchemaSubscription:
		params = d.Parameters
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return invalidRequest("Invalid query string: %s", strings.TrimPrefix(err.Error(), "invalid "))
	}
	if params == nil {
		return nil
	}
	return checkParams(params, q)
}

// checkParams validates q against params. An empty value counts as absent:
// clients send "cursor=" for no cursor.
func checkParams(params *lexicon.SchemaParams, q url.Values) error {
	for _, name := range params.Required {
		if !hasValue(q[name]) {
			return invalidRequest("Params must have the property %q", name)
		}
	}
	for name, def := range params.Properties {
		vals := q[name]
		if !hasValue(vals) {
			continue
		}
		path := "Params/" + name
		if arr, ok := def.Inner.(lexicon.SchemaArray); ok {
			if arr.MaxLength != nil && len(vals) > *arr.MaxLength {
				return invalidRequest("%s must not have more than %d elements", path, *arr.MaxLength)
			}
			if arr.MinLength != nil && len(vals) < *arr.MinLength {
				return invalidRequest("%s must not have fewer than %d elements", path, *arr.MinLength)
			}
			for i, v := range vals {
				if err := checkParam(fmt.Sprintf("%s/%d", path, i), arr.Items.Inner, v); err != nil {
					return err
				}
			}
			continue
		}
		if len(vals) > 1 {
			return invalidRequest("%s must be a single value, not %d", path, len(vals))
		}
		if err := checkParam(path, def.Inner, vals[0]); err != nil {
			return err
		}
	}
	return nil
}

func hasValue(vals []string) bool {
	for _, v := range vals {
		if v != "" {
			return true
		}
	}
	return false
}

// checkParam checks one value, as a query string spells it, against a
// boolean, integer or string schema.
func checkParam(path string, def any, v string) error {
	switch d := def.(type) {
	case lexicon.SchemaBoolean:
		if v != "true" && v != "false" {
			return invalidRequest("%s must be a boolean (true or false)", path)
		}
		if err := d.Validate(v == "true"); err != nil {
			return invalidRequest("%s must be %v", path, *d.Const)
		}
	case lexicon.SchemaInteger:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return invalidRequest("%s must be an integer", path)
		}
		switch {
		case d.Minimum != nil && n < int64(*d.Minimum):
			return invalidRequest("%s can not be less than %d", path, *d.Minimum)
		case d.Maximum != nil && n > int64(*d.Maximum):
			return invalidRequest("%s can not be greater than %d", path, *d.Maximum)
		}
		if err := d.Validate(n); err != nil {
			return invalidRequest("%s: %v", path, err)
		}
	case lexicon.SchemaString:
		switch {
		case d.MaxLength != nil && len(v) > *d.MaxLength:
			return invalidRequest("%s must not be longer than %d characters", path, *d.MaxLength)
		case d.MinLength != nil && len(v) < *d.MinLength:
			return invalidRequest("%s must not be shorter than %d characters", path, *d.MinLength)
		case len(d.Enum) > 0 && !slices.Contains(d.Enum, v):
			return invalidRequest("%s must be one of (%s)", path, strings.Join(d.Enum, "|"))
		}
		if err := d.Validate(v, 0); err != nil {
			if d.Format != nil {
				return invalidRequest("%s must be a valid %s", path, *d.Format)
			}
			return invalidRequest("%s: %v", path, err)
		}
	}
	return nil
}
