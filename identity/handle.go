package identity

import (
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Limits on the first label of a handle under a service domain, as the
// reference PDS enforces them.
const (
	MinServiceHandleLabel = 3
	MaxServiceHandleLabel = 18
)

// HandleAllowed reports whether an account may be created with handle on
// this server. Comparison is case-insensitive. Allowed are:
//
//   - the hostname itself (a single-user PDS may take its own name; the
//     handle is then proved by this server's /.well-known/atproto-did);
//   - one label below the hostname or below one of serviceDomains (entries
//     like ".test" or ".example.com"; a missing leading dot is assumed),
//     where the label must be 3 to 18 characters long.
//
// Anything else gives an error wrapping ErrUnsupportedDomain. An invalid
// handle (bad syntax, a disallowed TLD such as .local or .localhost, a label
// too short or too long, or more than one label below the service domain)
// gives an error wrapping ErrInvalidHandle. Reserved names (the reference's
// handle/reserved.ts list) are not checked: on a single-user server the
// operator chooses the handle.
func HandleAllowed(handle syntax.Handle, hostname string, serviceDomains []string) error {
	h, err := syntax.ParseHandle(handle.String())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidHandle, err)
	}
	h = h.Normalize()
	if !h.AllowedTLD() {
		return fmt.Errorf("%w: %q uses the disallowed top-level domain .%s", ErrInvalidHandle, h, h.TLD())
	}
	name := h.String()
	host := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(hostname)), ".")
	if host != "" && name == host {
		return nil
	}

	// The longest matching domain decides, so ".example.com" wins over ".com".
	domain := ""
	for _, d := range serviceDomainList(host, serviceDomains) {
		if strings.HasSuffix(name, d) && len(d) > len(domain) {
			domain = d
		}
	}
	if domain == "" {
		return fmt.Errorf("%w: %q is neither this server's hostname nor one label below %s",
			ErrUnsupportedDomain, name, strings.Join(serviceDomainList(host, serviceDomains), ", "))
	}
	front := strings.TrimSuffix(name, domain)
	switch {
	case strings.Contains(front, "."):
		return fmt.Errorf("%w: %q has more than one label below %s", ErrInvalidHandle, name, domain)
	case len(front) < MinServiceHandleLabel:
		return fmt.Errorf("%w: %q is shorter than %d characters", ErrInvalidHandle, front, MinServiceHandleLabel)
	case len(front) > MaxServiceHandleLabel:
		return fmt.Errorf("%w: %q is longer than %d characters", ErrInvalidHandle, front, MaxServiceHandleLabel)
	}
	return nil
}

// serviceDomainList returns "."+host followed by the configured service
// domains, lower-cased, each with a leading dot, without empties.
func serviceDomainList(host string, serviceDomains []string) []string {
	var out []string
	add := func(d string) {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		d = strings.TrimPrefix(d, ".")
		if d == "" {
			return
		}
		out = append(out, "."+d)
	}
	add(host)
	for _, d := range serviceDomains {
		add(d)
	}
	return out
}
