package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// nonPublicTLDs are top-level names that never resolve on the internet
// (RFC 2606, RFC 6761, RFC 6762, and the informal private ones).
var nonPublicTLDs = map[string]bool{
	"localhost": true, "test": true, "example": true, "invalid": true, "local": true,
	"internal": true, "lan": true, "home": true, "corp": true, "arpa": true, "onion": true,
}

// isPublicHostname reports whether host can be reached from the internet by
// name, as a PDS registered in the public PLC directory must be.
func isPublicHostname(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	i := strings.LastIndexByte(host, '.')
	if i < 0 {
		return false
	}
	return !nonPublicTLDs[host[i+1:]]
}

// isPublicPLC reports whether u is the public PLC directory, whose entries
// are permanent and seen by the whole network.
func isPublicPLC(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := strings.ToLower(pu.Hostname())
	return h == "plc.directory" || strings.HasSuffix(h, ".plc.directory")
}

// plcRefusal explains why an account must not be created with cfg: a DID
// registered in the public directory for a server nobody can reach is junk
// there forever. nil when creating is fine.
func plcRefusal(cfg *config) error {
	if cfg.DIDMethod != "plc" || !isPublicPLC(cfg.PLCURL) || isPublicHostname(cfg.Hostname) {
		return nil
	}
	return fmt.Errorf("refusing to register a DID for %q in the public PLC directory (%s): "+
		"nobody on the internet can reach this server, so the DID would point nowhere forever. "+
		"To try the PDS on this machine, run `pds dev` (a local PLC directory and an account, no internet needed); "+
		"for a real server set PDS_HOSTNAME to its public DNS name", cfg.Hostname, cfg.PLCURL)
}

// refusePublicPLC wraps the PLC client's transport so that no operation is
// submitted to the public directory on behalf of a non-public hostname,
// whichever path (CLI or createAccount from a client) creates the account.
func refusePublicPLC(cfg *config, next http.RoundTripper) http.RoundTripper {
	refusal := plcRefusal(cfg)
	if refusal == nil {
		return next
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return nil, refusal
		}
		return next.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
