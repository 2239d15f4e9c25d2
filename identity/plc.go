// Package identity creates and publishes the account's identity: did:plc
// genesis operations (built and signed with go-didplc, submitted to a PLC
// directory), did:web documents, and the rules for which handles an account
// may take on this server. It knows nothing of HTTP serving; PLCClient is an
// HTTP client of the PLC directory only.
package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
)

// DefaultPLCTimeout bounds a PLC directory request when PLCClient.HTTP is
// nil.
const DefaultPLCTimeout = 30 * time.Second

// maxPLCResponse bounds how much of a PLC directory answer is read.
const maxPLCResponse = 1 << 20

// PLCGenesis builds and signs the genesis operation of a new did:plc:
//
//	{type: plc_operation, rotationKeys: [did:key of rotationKey],
//	 verificationMethods: {atproto: did:key of signingKey},
//	 alsoKnownAs: ["at://<handle>"],
//	 services: {atproto_pds: {type: AtprotoPersonalDataServer, endpoint: pdsEndpoint}},
//	 prev: null, sig}
//
// signed with rotationKey. The handle is lower-cased; pdsEndpoint must be an
// absolute http(s) URL without query or fragment (a trailing "/" is
// dropped). It returns the DID computed from the signed operation (which the
// directory will derive the same way) and the operation, ready for
// PLCClient.Submit.
func PLCGenesis(rotationKey atcrypto.PrivateKey, signingKey atcrypto.PublicKey, handle syntax.Handle, pdsEndpoint string) (syntax.DID, *didplc.RegularOp, error) {
	if rotationKey == nil || signingKey == nil {
		return "", nil, fmt.Errorf("identity: PLC genesis needs a rotation key and a signing key")
	}
	h, err := syntax.ParseHandle(handle.String())
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalidHandle, err)
	}
	endpoint, err := cleanEndpoint(pdsEndpoint)
	if err != nil {
		return "", nil, err
	}
	rotationPub, err := rotationKey.PublicKey()
	if err != nil {
		return "", nil, fmt.Errorf("identity: rotation key: %w", err)
	}
	op := &didplc.RegularOp{
		Type:         "plc_operation",
		RotationKeys: []string{rotationPub.DIDKey()},
		VerificationMethods: map[string]string{
			"atproto": signingKey.DIDKey(),
		},
		AlsoKnownAs: []string{"at://" + h.Normalize().String()},
		Services: map[string]didplc.OpService{
			"atproto_pds": {
				Type:     "AtprotoPersonalDataServer",
				Endpoint: endpoint,
			},
		},
		Prev: nil,
	}
	if err := op.Sign(rotationKey); err != nil {
		return "", nil, fmt.Errorf("identity: signing PLC operation: %w", err)
	}
	raw, err := op.DID()
	if err != nil {
		return "", nil, fmt.Errorf("identity: computing DID: %w", err)
	}
	did, err := syntax.ParseDID(raw)
	if err != nil {
		return "", nil, fmt.Errorf("identity: computed DID %q: %w", raw, err)
	}
	return did, op, nil
}

// PLCClient talks to a PLC directory (plc.directory, or a mock in tests).
// It only transports operations and documents; it does not validate them.
// The zero value is not usable: URL is required.
type PLCClient struct {
	// URL is the directory's base URL, e.g. "https://plc.directory".
	URL string
	// HTTP sends the requests and sets their timeouts; nil means a client
	// with DefaultPLCTimeout.
	HTTP *http.Client
}

// Submit sends a signed operation for did: POST {URL}/{did} with the
// operation as a JSON body. A non-2xx answer returns a *PLCError carrying
// the directory's message; transport failures wrap ErrPLC too.
func (c *PLCClient) Submit(ctx context.Context, did syntax.DID, op *didplc.RegularOp) error {
	if did.Method() != "plc" {
		return fmt.Errorf("%w: %q is not a did:plc", ErrInvalidDID, did)
	}
	if op == nil || !op.IsSigned() {
		return fmt.Errorf("%w: PLC operation is not signed", ErrInvalidDID)
	}
	body, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("identity: encoding PLC operation: %w", err)
	}
	u, err := c.didURL(did)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPLC, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxPLCResponse))
	return nil
}

// Resolve fetches the current DID document of did: GET {URL}/{did}. The
// document is returned as decoded JSON (a generic map, so it can be passed
// through unchanged, e.g. as createAccount's didDoc); decode it into
// indigo's identity.DIDDocument for typed access. The document's "id" must
// equal did. A 404 or 410 answer matches ErrDIDNotFound.
func (c *PLCClient) Resolve(ctx context.Context, did syntax.DID) (map[string]any, error) {
	if did.Method() != "plc" {
		return nil, fmt.Errorf("%w: %q is not a did:plc", ErrInvalidDID, did)
	}
	u, err := c.didURL(did)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPLC, err)
	}
	req.Header.Set("Accept", "application/did+ld+json, application/json")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPLCResponse)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: decoding DID document of %s: %w", ErrPLC, did, err)
	}
	if id, _ := doc["id"].(string); id != did.String() {
		return nil, fmt.Errorf("%w: document for %s has id %q", ErrPLC, did, id)
	}
	return doc, nil
}

func (c *PLCClient) didURL(did syntax.DID) (string, error) {
	base := strings.TrimRight(c.URL, "/")
	if base == "" {
		return "", fmt.Errorf("%w: no PLC directory URL configured", ErrPLC)
	}
	return base + "/" + url.PathEscape(did.String()), nil
}

// do sends req and turns a non-2xx answer into a *PLCError. On success the
// caller closes the body.
func (c *PLCClient) do(req *http.Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultPLCTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrPLC, req.Method, req.URL.Redacted(), err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, &PLCError{StatusCode: resp.StatusCode, Message: errorMessage(resp.StatusCode, b)}
}

// errorMessage extracts the message of a PLC directory error body, which is
// JSON {"message": "..."} (sometimes {"error": "..."}), or falls back to the
// body text or the status text.
func errorMessage(status int, body []byte) string {
	var e struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		switch {
		case e.Message != "":
			return e.Message
		case e.Error != "":
			return e.Error
		}
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		if len(s) > 512 {
			s = s[:512] + "…"
		}
		return s
	}
	return http.StatusText(status)
}

// cleanEndpoint checks that a PDS endpoint is an absolute http(s) URL with a
// host and no query, fragment or user info, and drops a trailing "/".
func cleanEndpoint(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidEndpoint, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrInvalidEndpoint, endpoint)
	}
	return strings.TrimSuffix(endpoint, "/"), nil
}
