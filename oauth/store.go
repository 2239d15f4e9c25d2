package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names. Everything of this package lives under the "oauth_" prefix.
var (
	// bucketRequests: request id → authRequest (pushed requests, then the
	// code issued for them, then a tombstone once the code is used).
	bucketRequests = []byte("oauth_requests")
	// bucketFamilies: family id → family (one authorized app session: its
	// refresh token chain and the access tokens minted from it).
	bucketFamilies = []byte("oauth_families")
	// bucketDevices: device id → device (a browser signed in to the
	// sign-in pages).
	bucketDevices = []byte("oauth_devices")
)

var allBuckets = [][]byte{bucketRequests, bucketFamilies, bucketDevices}

// Prefixes of the identifiers and secrets this package hands out, as the
// reference provider names them, so a value says what it is.
const (
	prefixRequest = "req-"
	prefixCode    = "cod-"
	prefixRefresh = "ref-"
	prefixFamily  = "ses-"
	prefixDevice  = "dev-"
	prefixToken   = "tok-"

	requestURIPrefix = "urn:ietf:params:oauth:request_uri:"
)

// authRequest is a pushed authorization request and what became of it.
type authRequest struct {
	ClientID     string    `json:"clientId"`
	ClientName   string    `json:"clientName,omitempty"`
	Confidential bool      `json:"confidential,omitempty"`
	ClientKey    string    `json:"clientKey,omitempty"` // thumbprint of the key that authenticated the client
	RedirectURI  string    `json:"redirectUri"`
	ResponseMode string    `json:"responseMode,omitempty"` // "query" (default) or "fragment"
	Scope        string    `json:"scope"`
	State        string    `json:"state,omitempty"`
	Challenge    string    `json:"codeChallenge"`
	LoginHint    string    `json:"loginHint,omitempty"`
	Prompt       string    `json:"prompt,omitempty"` // "login": sign in again even on a signed-in browser
	JKT          string    `json:"jkt"`              // DPoP key of the PAR request
	CreatedAt    time.Time `json:"createdAt"`
	ExpiresAt    time.Time `json:"expiresAt"`

	// Set when the owner signed in on a device for this request.
	DeviceID string `json:"deviceId,omitempty"`
	Sub      string `json:"sub,omitempty"`

	// Set when the owner approved: the hash of the code, single use.
	CodeHash string `json:"codeHash,omitempty"`
	// UsedBy is the family the code was exchanged for: a second use of the
	// code revokes it (RFC 6749 4.1.2).
	UsedBy string `json:"usedBy,omitempty"`
}

// family is one authorized app session: the refresh tokens that follow one
// another from a code, and the access tokens minted from them.
type family struct {
	ClientID     string    `json:"clientId"`
	ClientName   string    `json:"clientName,omitempty"`
	Confidential bool      `json:"confidential,omitempty"`
	ClientKey    string    `json:"clientKey,omitempty"`
	Sub          string    `json:"sub"`
	Scope        string    `json:"scope"`
	JKT          string    `json:"jkt"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
	// ExpiresAt bounds the whole session; RefreshExpiresAt the current
	// refresh token (inactivity).
	ExpiresAt        time.Time `json:"expiresAt"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
	// RefreshHash is the hash of the current refresh token's secret;
	// Previous keeps the hashes of rotated ones, so that a replayed old
	// token is recognised and revokes the family.
	RefreshHash string   `json:"refreshHash"`
	Previous    []string `json:"previous,omitempty"`
}

// maxPrevious bounds the rotated refresh-token hashes a family remembers.
const maxPrevious = 32

// device is a browser signed in to the sign-in pages as the owner.
type device struct {
	SecretHash string `json:"secretHash"`
	Sub        string `json:"sub"`
	// Pending is set between a right password and the second factor:
	// a pending device is not signed in.
	Pending   bool      `json:"pending,omitempty"`
	UserAgent string    `json:"userAgent,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func getJSON[T any](tx *bolt.Tx, bucket []byte, key string) (*T, error) {
	v := tx.Bucket(bucket).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	var t T
	if err := json.Unmarshal(v, &t); err != nil {
		return nil, fmt.Errorf("decoding %s/%s: %w", bucket, key, err)
	}
	return &t, nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), data)
}

// randomToken returns n random bytes, base64url encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret is the stored form of a secret: its SHA-256. Secrets are
// 256-bit random values, so no salt or slow hash is needed.
func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func sameHash(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// newSecretToken returns a token "<prefix><id>.<secret>" for a record id,
// and the hash of its secret to store.
func newSecretToken(prefix, id string) (token, hash string) {
	secret := randomToken(32)
	return prefix + id + "." + secret, hashSecret(secret)
}

// splitSecretToken splits "<prefix><id>.<secret>"; ok is false for any
// other shape.
func splitSecretToken(prefix, token string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, prefix)
	if !found || len(token) > 256 {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, ".")
	if !found || id == "" || secret == "" {
		return "", "", false
	}
	return id, secret, true
}

// sweep deletes expired requests, families and devices in tx. Requests are
// kept until their expiry even once used, so that code reuse is detected.
func sweep(tx *bolt.Tx, now time.Time) (int, error) {
	n := 0
	del := func(bucket []byte, expired func(v []byte) bool) error {
		b := tx.Bucket(bucket)
		var doomed [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			if expired(v) {
				doomed = append(doomed, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n += len(doomed)
		return nil
	}
	expiredAt := func(v []byte, field func(m map[string]json.RawMessage) json.RawMessage) bool {
		var m map[string]json.RawMessage
		if json.Unmarshal(v, &m) != nil {
			return true // an unreadable record is useless: drop it
		}
		var t time.Time
		if json.Unmarshal(field(m), &t) != nil {
			return true
		}
		return !now.Before(t)
	}
	if err := del(bucketRequests, func(v []byte) bool {
		return expiredAt(v, func(m map[string]json.RawMessage) json.RawMessage { return m["expiresAt"] })
	}); err != nil {
		return n, err
	}
	if err := del(bucketFamilies, func(v []byte) bool {
		var f family
		if json.Unmarshal(v, &f) != nil {
			return true
		}
		return !now.Before(f.ExpiresAt) || !now.Before(f.RefreshExpiresAt)
	}); err != nil {
		return n, err
	}
	if err := del(bucketDevices, func(v []byte) bool {
		return expiredAt(v, func(m map[string]json.RawMessage) json.RawMessage { return m["expiresAt"] })
	}); err != nil {
		return n, err
	}
	return n, nil
}
