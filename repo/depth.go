package repo

import "fmt"

// MaxRecordDepth bounds the nesting of containers (objects and arrays) in a
// record, the record itself counting as one: atproto's data limit as indigo
// declares it (atdata.MAX_CBOR_NESTED_LEVELS = 32). Records nested 9,000
// levels deep were accepted and served, and clients crashed reading them;
// the reference sets no explicit limit, and no record in the Bluesky
// lexicons comes near this one (a post with a quoted post with media with
// facets is under 10).
const MaxRecordDepth = 32

// jsonDepthOK scans JSON text for nesting deeper than MaxRecordDepth before
// any parser recurses into it. Brackets inside strings do not count.
func jsonDepthOK(b []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > MaxRecordDepth {
				return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalidRecord, MaxRecordDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// depthOK checks a decoded record's nesting, descending no deeper than the
// limit.
func depthOK(v any, depth int) error {
	switch x := v.(type) {
	case map[string]any:
		if depth++; depth > MaxRecordDepth {
			return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalidRecord, MaxRecordDepth)
		}
		for _, e := range x {
			if err := depthOK(e, depth); err != nil {
				return err
			}
		}
	case []any:
		if depth++; depth > MaxRecordDepth {
			return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalidRecord, MaxRecordDepth)
		}
		for _, e := range x {
			if err := depthOK(e, depth); err != nil {
				return err
			}
		}
	}
	return nil
}
