package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
)

// describeJSONError turns an error of decoding a JSON body into the
// reference's words for it: the field and the type the lexicon wants
// ("Input/identifier must be a string"), never Go's struct and type names.
func describeJSONError(err error) error {
	return describeJSONErrorAt("Input", err)
}

// describeJSONErrorAt is describeJSONError for a value found at path
// ("Input/writes/2").
func describeJSONErrorAt(path string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			path += "/" + strings.ReplaceAll(te.Field, ".", "/")
		}
		return invalidRequest("%s must be %s", path, lexiconType(te.Type))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return invalidRequest("Invalid JSON body: %s (at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	}
	// Any other decoding failure: say it without naming Go types.
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.Contains(msg, "Go ") || strings.Contains(msg, "api.") {
		msg = "not valid for this method"
	}
	return invalidRequest("Invalid JSON body: %s", msg)
}

// lexiconType names a Go type the way a lexicon names its JSON type.
func lexiconType(t reflect.Type) string {
	if t == nil {
		return "a valid value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a valid value"
}
