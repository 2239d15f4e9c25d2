package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/scrypt"
)

// Password limits, as the reference PDS applies them (in characters).
const (
	// MaxPasswordLength bounds a new account password.
	MaxPasswordLength = 256
	// MaxLoginPasswordLength bounds the password of a login attempt; a
	// longer one fails as ErrInvalidLogin without being hashed.
	MaxLoginPasswordLength = 512
)

// scrypt parameters: Node's crypto.scrypt defaults, which the reference PDS
// uses (N=16384, r=8, p=1, 64-byte key).
const (
	scryptN      = 16384
	scryptR      = 8
	scryptP      = 1
	scryptKeyLen = 64
)

// hashWithSalt returns "<salt>:<hex scrypt(password, salt)>". As in the
// reference PDS, the salt enters scrypt as the bytes of its hex string (Node
// passes the string), so hashes are interchangeable with the reference's.
func hashWithSalt(password, saltHex string) (string, error) {
	key, err := scrypt.Key([]byte(password), []byte(saltHex), scryptN, scryptR, scryptP, scryptKeyLen)
	if err != nil {
		return "", fmt.Errorf("scrypt: %w", err)
	}
	return saltHex + ":" + hex.EncodeToString(key), nil
}

// hashPassword hashes an account password with a fresh 16-byte random salt.
func hashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading random salt: %w", err)
	}
	return hashWithSalt(password, hex.EncodeToString(salt))
}

// verifyPassword reports whether password matches a hash from hashWithSalt,
// comparing in constant time. A malformed stored hash never matches.
func verifyPassword(password, stored string) (bool, error) {
	saltHex, _, ok := strings.Cut(stored, ":")
	if !ok || saltHex == "" {
		return false, nil
	}
	got, err := hashWithSalt(password, saltHex)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(stored)) == 1, nil
}

// appPasswordSalt is the reference PDS's deterministic app-password salt: the
// first 16 bytes of sha256(did) as hex. It makes the hash of a given app
// password fixed, so a login hashes once and compares with every stored hash.
func appPasswordSalt(did string) string {
	sum := sha256.Sum256([]byte(did))
	return hex.EncodeToString(sum[:16])
}

// hashAppPassword hashes an app password of the account did.
func hashAppPassword(did, password string) (string, error) {
	return hashWithSalt(password, appPasswordSalt(did))
}

// base32Alphabet is the lowercase RFC 4648 base32 alphabet that reference app
// passwords are drawn from.
const base32Alphabet = "abcdefghijklmnopqrstuvwxyz234567"

// generateAppPassword returns a fresh app password "xxxx-xxxx-xxxx-xxxx"
// (80 random bits).
func generateAppPassword() (string, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("reading random app password: %w", err)
	}
	var b strings.Builder
	for i, c := range raw {
		if i > 0 && i%4 == 0 {
			b.WriteByte('-')
		}
		// 256 is a multiple of 32, so c%32 is uniform.
		b.WriteByte(base32Alphabet[c%32])
	}
	return b.String(), nil
}

// ValidatePassword checks the length rule of a new account password (1 to
// MaxPasswordLength characters): the one place it is defined.
func ValidatePassword(password string) error {
	if n := utf8.RuneCountInString(password); n == 0 || n > MaxPasswordLength {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidPassword, MaxPasswordLength)
	}
	return nil
}
