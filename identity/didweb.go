package identity

import (
	"fmt"
	"strings"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// DIDWeb returns did:web:<hostname>. The hostname is lower-cased and must be
// a DNS name without port or path: dot-separated labels of 1 to 63 letters,
// digits and inner hyphens, at most 253 characters, the last label starting
// with a letter (so IP addresses are refused). A single label such as
// "localhost" is accepted, for local development. Otherwise the error wraps
// ErrInvalidHostname.
func DIDWeb(hostname string) (syntax.DID, error) {
	host := strings.ToLower(hostname)
	if err := checkHostname(host); err != nil {
		return "", fmt.Errorf("%w: %q: %s", ErrInvalidHostname, hostname, err)
	}
	did, err := syntax.ParseDID("did:web:" + host)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidHostname, hostname, err)
	}
	return did, nil
}

func checkHostname(host string) error {
	if host == "" {
		return fmt.Errorf("empty")
	}
	if len(host) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("label %q is empty or longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q not allowed (no port, path or scheme)", r)
			}
		}
	}
	if last := labels[len(labels)-1]; last[0] < 'a' || last[0] > 'z' {
		return fmt.Errorf("last label %q does not start with a letter", last)
	}
	return nil
}

// DIDWebDocument returns the DID document served at /.well-known/did.json
// for did (normally did:web:<hostname>, from DIDWeb):
//
//	{"@context": [did v1, multikey v1, secp256k1-2019 v1],
//	 "id": did,
//	 "alsoKnownAs": ["at://<handle>"],
//	 "verificationMethod": [{"id": did#atproto, "type": "Multikey",
//	   "controller": did, "publicKeyMultibase": multibase of signingKey}],
//	 "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
//	   "serviceEndpoint": pdsEndpoint}]}
//
// The handle is lower-cased and a trailing "/" of pdsEndpoint is dropped. The
// result is fresh on each call and the caller may encode it with
// encoding/json.
func DIDWebDocument(did syntax.DID, handle syntax.Handle, signingKey atcrypto.PublicKey, pdsEndpoint string) map[string]any {
	return map[string]any{
		"@context": []string{
			"https://www.w3.org/ns/did/v1",
			"https://w3id.org/security/multikey/v1",
			"https://w3id.org/security/suites/secp256k1-2019/v1",
		},
		"id":          did.String(),
		"alsoKnownAs": []string{"at://" + handle.Normalize().String()},
		"verificationMethod": []map[string]any{{
			"id":                 did.String() + "#atproto",
			"type":               "Multikey",
			"controller":         did.String(),
			"publicKeyMultibase": signingKey.Multibase(),
		}},
		"service": []map[string]any{{
			"id":              "#atproto_pds",
			"type":            "AtprotoPersonalDataServer",
			"serviceEndpoint": strings.TrimSuffix(pdsEndpoint, "/"),
		}},
	}
}
