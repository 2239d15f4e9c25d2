package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DPoP (RFC 9449) as the atproto profile uses it: ES256 proofs carrying
// their public key, server-issued nonces, a replay cache of jti values, and
// tokens bound to the key's thumbprint (cnf.jkt).

const (
	// dpopMaxAge is how old (by iat) a proof may be. Freshness is mostly
	// the nonce's job; this bounds how long a jti must be remembered.
	dpopMaxAge = 5 * time.Minute
	// dpopMaxSkew is how far in the future iat may be.
	dpopMaxSkew = 30 * time.Second
	// nonceRotation is how often the server nonce changes (the reference
	// rotates every 3 minutes); the previous and next nonces stay valid.
	nonceRotation = 3 * time.Minute
	// maxProofLength bounds the DPoP header.
	maxProofLength = 8 << 10
	// maxReplayEntries bounds the replay cache; past it, new proofs are
	// refused until old ones expire (a single-user server sees few).
	maxReplayEntries = 100_000
)

// errUseNonce: the proof lacks the current nonce; the client retries with
// the one in the DPoP-Nonce header.
var errUseNonce = errors.New("use_dpop_nonce")

// dpopError is a refused proof: "invalid_dpop_proof" with a description.
type dpopError struct{ desc string }

func (e *dpopError) Error() string { return "invalid_dpop_proof: " + e.desc }

func badProof(format string, args ...any) error {
	return &dpopError{desc: fmt.Sprintf(format, args...)}
}

// nonces issues and checks stateless DPoP nonces: an HMAC of the current
// time slot, so they survive restarts and need no storage.
type nonces struct {
	key []byte
	now func() time.Time
}

func (n *nonces) slot(t time.Time) int64 { return t.Unix() / int64(nonceRotation/time.Second) }

func (n *nonces) forSlot(slot int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(slot))
	m := hmac.New(sha256.New, n.key)
	m.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// current is the nonce to hand out now.
func (n *nonces) current() string { return n.forSlot(n.slot(n.now())) }

// valid accepts the nonce of the current slot and of its neighbours.
func (n *nonces) valid(nonce string) bool {
	s := n.slot(n.now())
	for _, slot := range []int64{s, s - 1, s + 1} {
		if hmac.Equal([]byte(nonce), []byte(n.forSlot(slot))) {
			return true
		}
	}
	return false
}

// replayCache remembers the jti of every accepted proof until it is too old
// to be accepted again.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // key → when it may be forgotten
}

// add records key, reporting false if it was already there (a replay) or
// the cache is full.
func (c *replayCache) add(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if until, ok := c.seen[key]; ok && now.Before(until) {
		return false
	}
	if len(c.seen) >= maxReplayEntries {
		for k, until := range c.seen {
			if !now.Before(until) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= maxReplayEntries {
			return false
		}
	}
	c.seen[key] = now.Add(dpopMaxAge + dpopMaxSkew)
	return true
}

// proof is a verified DPoP proof.
type proof struct {
	JKT string // thumbprint of the proof's key
	JTI string
}

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d,omitempty"`
}

// thumbprint is the RFC 7638 thumbprint of an EC key: the SHA-256 of its
// required members in lexicographic order.
func (k *jwk) thumbprint() string {
	canon := fmt.Sprintf(`{"crv":%q,"kty":%q,"x":%q,"y":%q}`, k.Crv, k.Kty, k.X, k.Y)
	h := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// publicKey returns the P-256 key of k, checking that it is a valid point.
func (k *jwk) publicKey() (*ecdsa.PublicKey, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, fmt.Errorf("key is not an EC P-256 key")
	}
	if k.D != "" {
		return nil, fmt.Errorf("key holds a private part")
	}
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil || len(x) == 0 || len(x) > 32 {
		return nil, fmt.Errorf("bad x coordinate")
	}
	y, err := base64.RawURLEncoding.DecodeString(k.Y)
	if err != nil || len(y) == 0 || len(y) > 32 {
		return nil, fmt.Errorf("bad y coordinate")
	}
	// Some clients drop leading zero bytes of a coordinate (about 1 key in
	// 128); left-pad to the field size rather than refuse them.
	raw := make([]byte, 65)
	raw[0] = 4
	copy(raw[33-len(x):33], x)
	copy(raw[65-len(y):], y)
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
}

// splitJWS splits a compact JWS and decodes its header and payload into h
// and c, returning the signing input and the signature.
func splitJWS(token string, h, c any) (signed string, sig []byte, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", nil, fmt.Errorf("not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", nil, fmt.Errorf("header: %w", err)
	}
	if err := json.Unmarshal(hb, h); err != nil {
		return "", nil, fmt.Errorf("header: %w", err)
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", nil, fmt.Errorf("payload: %w", err)
	}
	if err := json.Unmarshal(cb, c); err != nil {
		return "", nil, fmt.Errorf("payload: %w", err)
	}
	sig, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", nil, fmt.Errorf("signature: %w", err)
	}
	return parts[0] + "." + parts[1], sig, nil
}

// verifyES256 checks a raw r||s ES256 signature.
func verifyES256(pub *ecdsa.PublicKey, signed string, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256([]byte(signed))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

type dpopHeader struct {
	Typ string `json:"typ"`
	Alg string `json:"alg"`
	JWK *jwk   `json:"jwk"`
}

type dpopClaims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	Nonce string   `json:"nonce"`
	ATH   *string  `json:"ath"`
}

// normalizeHTU reduces a URL to what DPoP compares: scheme, host (default
// port dropped) and path, without query or fragment.
func normalizeHTU(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return strings.ToLower(u.Scheme) + "://" + host + path, true
}

// verifyProof checks the DPoP proof of a request to method htu. accessToken
// is the token the proof must carry the hash of (ath), or "" at the
// authorization server's endpoints. Errors are errUseNonce or *dpopError.
func (s *Server) verifyProof(header []string, method, htu, accessToken string) (*proof, error) {
	if len(header) == 0 || header[0] == "" {
		return nil, badProof("DPoP proof required")
	}
	if len(header) > 1 {
		return nil, badProof("more than one DPoP proof")
	}
	tok := header[0]
	if len(tok) > maxProofLength {
		return nil, badProof("DPoP proof too long")
	}
	var h dpopHeader
	var c dpopClaims
	signed, sig, err := splitJWS(tok, &h, &c)
	if err != nil {
		return nil, badProof("malformed DPoP proof: %v", err)
	}
	if h.Typ != "dpop+jwt" {
		return nil, badProof("DPoP proof typ must be dpop+jwt")
	}
	if h.Alg != "ES256" {
		return nil, badProof("DPoP proof alg must be ES256")
	}
	if h.JWK == nil {
		return nil, badProof("DPoP proof has no jwk")
	}
	pub, err := h.JWK.publicKey()
	if err != nil {
		return nil, badProof("DPoP proof jwk: %v", err)
	}
	if !verifyES256(pub, signed, sig) {
		return nil, badProof("DPoP proof signature does not verify")
	}
	if c.JTI == "" || len(c.JTI) > 256 {
		return nil, badProof("DPoP proof jti missing or too long")
	}
	if c.HTM != method {
		return nil, badProof("DPoP htm mismatch")
	}
	got, ok := normalizeHTU(c.HTU)
	want, _ := normalizeHTU(htu)
	if !ok || got != want {
		return nil, badProof("DPoP htu mismatch")
	}
	now := s.now()
	if c.IAT == nil {
		return nil, badProof("DPoP proof iat missing")
	}
	iat := time.Unix(int64(*c.IAT), 0)
	if iat.Before(now.Add(-dpopMaxAge)) || iat.After(now.Add(dpopMaxSkew)) {
		return nil, badProof("DPoP proof iat out of range")
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		if c.ATH == nil || !hmac.Equal([]byte(*c.ATH), []byte(base64.RawURLEncoding.EncodeToString(sum[:]))) {
			return nil, badProof("DPoP ath mismatch")
		}
	}
	if c.Nonce == "" || !s.nonces.valid(c.Nonce) {
		return nil, errUseNonce
	}
	jkt := h.JWK.thumbprint()
	if !s.replay.add(jkt+" "+c.JTI, now) {
		return nil, badProof("DPoP proof replayed")
	}
	return &proof{JKT: jkt, JTI: c.JTI}, nil
}
