package auth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"
	bolt "go.etcd.io/bbolt"
)

// refreshRecord is a stored refresh token, keyed by its jti. A refresh JWT is
// usable only while its record exists and ExpiresAt has not passed.
type refreshRecord struct {
	// ExpiresAt is the JWT's exp, cut to the end of the grace period once
	// the token has been rotated.
	ExpiresAt time.Time `json:"expiresAt"`
	// AppPassword and AppPasswordID name the app password the session came
	// from ("" for the account password).
	AppPassword   string `json:"appPassword,omitempty"`
	AppPasswordID string `json:"appPasswordId,omitempty"`
	// NextID is the jti of the successor after a rotation.
	NextID string `json:"nextId,omitempty"`
}

func getRefresh(tx *bolt.Tx, jti string) (*refreshRecord, error) {
	v := tx.Bucket(bucketRefresh).Get([]byte(jti))
	if v == nil {
		return nil, nil
	}
	var r refreshRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decoding refresh token: %w", err)
	}
	return &r, nil
}

// eachRefresh calls fn for every stored refresh token. fn must not change
// the bucket.
func eachRefresh(tx *bolt.Tx, fn func(jti string, r *refreshRecord) error) error {
	return tx.Bucket(bucketRefresh).ForEach(func(k, v []byte) error {
		var r refreshRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decoding refresh token: %w", err)
		}
		return fn(string(k), &r)
	})
}

// deleteRefreshTokens deletes every stored refresh token that match selects.
func deleteRefreshTokens(tx *bolt.Tx, match func(*refreshRecord) bool) error {
	var doomed []string
	err := eachRefresh(tx, func(jti string, r *refreshRecord) error {
		if match(r) {
			doomed = append(doomed, jti)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketRefresh)
	for _, jti := range doomed {
		if err := b.Delete([]byte(jti)); err != nil {
			return err
		}
	}
	return nil
}

// deleteExpiredRefreshTokens tidies the bucket, as the reference does on
// every rotation.
func deleteExpiredRefreshTokens(tx *bolt.Tx, now time.Time) error {
	return deleteRefreshTokens(tx, func(r *refreshRecord) bool { return !now.Before(r.ExpiresAt) })
}

// refreshExpiry is the exp of a refresh token issued at now (whole seconds,
// like the JWT's).
func refreshExpiry(now time.Time) time.Time {
	return time.Unix(now.Unix(), 0).Add(RefreshTokenLifetime)
}

// Login checks identifier and password and starts a session. identifier is
// the handle or the email (case-insensitive; an identifier containing "@" is
// taken as an email) or the DID. The account password is tried first, then
// the app passwords. Any mismatch, including no account at all or a password
// longer than MaxLoginPasswordLength, is ErrInvalidLogin. Every call takes at
// least Config.MinLoginDuration (unless ctx ends first).
func (s *Store) Login(ctx context.Context, identifier, password string) (*Session, error) {
	return s.LoginWith(ctx, identifier, password, nil)
}

// LoginCheck is a further check of a login (a second factor), run once the
// password matched, inside the transaction that issues the session:
// appPassword says whether it was an app password. An error rolls that
// transaction back and ends the login with the error, so a check that uses
// something up (an email code) does so exactly when a session is issued.
type LoginCheck func(tx *bolt.Tx, appPassword bool) error

// LoginWith is Login with check (nil: none) before the session is issued.
func (s *Store) LoginWith(ctx context.Context, identifier, password string, check LoginCheck) (*Session, error) {
	defer s.minLoginTime(ctx)()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !loginPasswordOK(password) {
		return nil, ErrInvalidLogin
	}

	// Read what the checks need, then hash outside any transaction.
	var acct *account
	var found bool
	var aps map[string]*appPasswordRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if acct, found, err = s.getAccount(tx); err != nil || !found {
			return err
		}
		aps, err = appPasswords(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !found || !acct.matches(identifier) {
		return nil, ErrInvalidLogin
	}
	var cred credential
	if perr := s.hashes.Do(ctx, func() { cred, err = s.checkPassword(acct, aps, password) }); perr != nil {
		return nil, perr
	}
	if err != nil {
		return nil, err
	}

	var sess *Session
	err = s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		acct, ok, err := s.getAccount(tx)
		if err != nil {
			return err
		}
		if !ok {
			return ErrInvalidLogin
		}
		if cred.apName != "" {
			// The app password may have been revoked meanwhile.
			ap, err := getAppPassword(tx, cred.apName)
			if err != nil {
				return err
			}
			if ap == nil || ap.ID != cred.apID {
				return ErrInvalidLogin
			}
		}
		if check != nil {
			if err := check(tx, cred.apName != ""); err != nil {
				return err
			}
		}
		if err := deleteExpiredRefreshTokens(tx, now); err != nil {
			return err
		}
		jti, err := newRefreshID()
		if err != nil {
			return err
		}
		if sess, err = s.issue(acct, cred, jti, now); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketRefresh), []byte(jti), &refreshRecord{
			ExpiresAt:     refreshExpiry(now),
			AppPassword:   cred.apName,
			AppPasswordID: cred.apID,
		})
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// matches reports whether identifier names the account.
func (r *account) matches(identifier string) bool {
	// Exact on the normalized form: see NormalizeIdentifier.
	identifier = NormalizeIdentifier(identifier)
	if identifier == "" {
		return false
	}
	if strings.Contains(identifier, "@") {
		return r.Email != "" && identifier == NormalizeIdentifier(r.Email)
	}
	return identifier == strings.ToLower(r.DID.String()) || identifier == NormalizeIdentifier(r.Handle.String())
}

// subject returns the account for a token whose sub is sub (any account
// when sub is ""): ErrInvalidToken when there is no account or it is
// another one.
func (s *Store) subject(tx *bolt.Tx, sub string) (*account, error) {
	acct, ok, err := s.getAccount(tx)
	if err != nil {
		return nil, err
	}
	if !ok || (sub != "" && acct.DID.String() != sub) {
		return nil, fmt.Errorf("%w: unknown subject", ErrInvalidToken)
	}
	return acct, nil
}

// checkPassword finds the credential password is: the account password or
// one of the app passwords aps; ErrInvalidLogin if none.
func (s *Store) checkPassword(acct *account, aps map[string]*appPasswordRecord, password string) (credential, error) {
	ok, err := verifyPassword(password, acct.PasswordHash)
	if err != nil {
		return credential{}, err
	}
	if ok {
		return credential{scope: ScopeAccess}, nil
	}
	if len(aps) == 0 {
		return credential{}, ErrInvalidLogin
	}
	hash, err := hashAppPassword(acct.DID.String(), password)
	if err != nil {
		return credential{}, err
	}
	var found credential
	matched := false
	// Compare with every record, in constant time each.
	for name, ap := range aps {
		if subtle.ConstantTimeCompare([]byte(hash), []byte(ap.Hash)) == 1 && !matched {
			matched = true
			found = credential{scope: ap.scope(), apName: name, apID: ap.ID}
		}
	}
	if !matched {
		return credential{}, ErrInvalidLogin
	}
	return found, nil
}

// Refresh rotates a refresh token, as refreshSession does. The token must
// verify (ErrExpiredToken past its exp), be stored, unexpired and not
// revoked (else ErrInvalidToken), and its app password, if any, must still
// exist. The old token's expiry is cut to at most RefreshGracePeriod from now
// and it records its successor, so that presenting it again within the grace
// period yields a session with the same successor jti. Expired tokens are
// deleted along the way.
func (s *Store) Refresh(ctx context.Context, refreshJWT string) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := s.parseRefresh(refreshJWT)
	if err != nil {
		return nil, err
	}
	var sess *Session
	var failed error
	err = s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		acct, err := s.subject(tx, c.Sub)
		if err != nil {
			return err
		}
		rec, err := getRefresh(tx, c.JTI)
		if err != nil {
			return err
		}
		if rec == nil {
			return ErrTokenRevoked
		}
		if !now.Before(rec.ExpiresAt) {
			// Commit the tidying, then fail.
			failed = ErrTokenRevoked
			return deleteExpiredRefreshTokens(tx, now)
		}
		cred := credential{scope: ScopeAccess}
		if rec.AppPassword != "" {
			ap, err := getAppPassword(tx, rec.AppPassword)
			if err != nil {
				return err
			}
			if ap == nil || ap.ID != rec.AppPasswordID {
				return fmt.Errorf("%w: app password revoked", ErrTokenRevoked)
			}
			cred = credential{scope: ap.scope(), apName: rec.AppPassword, apID: ap.ID}
		}

		b := tx.Bucket(bucketRefresh)
		if rec.NextID != "" {
			// A retry within the grace period: reuse the successor, which
			// must still exist (RevokeSession deletes the whole chain, and
			// a successor always outlives its predecessor's grace).
			next, err := getRefresh(tx, rec.NextID)
			if err != nil {
				return err
			}
			if next == nil {
				return ErrTokenRevoked
			}
		} else {
			if rec.NextID, err = newRefreshID(); err != nil {
				return err
			}
			if err := putJSON(b, []byte(rec.NextID), &refreshRecord{
				ExpiresAt:     refreshExpiry(now),
				AppPassword:   rec.AppPassword,
				AppPasswordID: rec.AppPasswordID,
			}); err != nil {
				return err
			}
		}
		if grace := now.Add(RefreshGracePeriod); grace.Before(rec.ExpiresAt) {
			rec.ExpiresAt = grace
		}
		if err := putJSON(b, []byte(c.JTI), rec); err != nil {
			return err
		}
		if err := deleteExpiredRefreshTokens(tx, now); err != nil {
			return err
		}
		sess, err = s.issue(acct, cred, rec.NextID, now)
		return err
	})
	if err == nil {
		err = failed
	}
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// RevokeSession ends the session of a refresh token, as deleteSession does:
// the token, its rotation successors and its predecessors still in their
// grace period all become invalid. The token must verify (ErrExpiredToken,
// ErrInvalidToken); revoking an already revoked token is not an error.
// Access tokens of the session stay valid until they expire, as in the
// reference PDS.
func (s *Store) RevokeSession(ctx context.Context, refreshJWT string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := s.parseRefresh(refreshJWT)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if _, err := s.subject(tx, c.Sub); err != nil {
			return err
		}
		next := map[string]string{}
		if err := eachRefresh(tx, func(jti string, r *refreshRecord) error {
			next[jti] = r.NextID
			return nil
		}); err != nil {
			return err
		}
		// The chain through c.JTI: follow NextID forwards and backwards
		// until nothing new joins.
		chain := map[string]bool{c.JTI: true}
		for grew := true; grew; {
			grew = false
			for jti, n := range next {
				if chain[jti] && n != "" && !chain[n] {
					chain[n], grew = true, true
				}
				if !chain[jti] && n != "" && chain[n] {
					chain[jti], grew = true, true
				}
			}
		}
		b := tx.Bucket(bucketRefresh)
		for jti := range chain {
			if err := b.Delete([]byte(jti)); err != nil {
				return err
			}
		}
		return nil
	})
}

// VerifyAccess checks an access token and returns its claims: HS256 with the
// server secret, header typ "at+jwt", aud the service DID, sub the account's
// DID, scope access, appPass or appPassPrivileged, no lxm or cnf claim, and
// not expired (else ErrExpiredToken). Any other failure is ErrInvalidToken.
//
// Revocation: access tokens are stateless, so revoking must be decidable
// from the token. An app-password token carries the random id of its app
// password (claim "apid", which the reference PDS does not issue and clients
// ignore); the token is valid only while an app password with that id exists
// and its privilege matches the scope. Revoking an app password deletes its
// record, so exactly its tokens stop working, and a new app password with the
// same name gets a new id and does not revive them. A token issued before the
// last SetPassword (by iat, in seconds) is refused too.
func (s *Store) VerifyAccess(ctx context.Context, accessJWT string) (*Claims, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := s.parse(accessJWT, typAccess)
	if err != nil {
		return nil, err
	}
	switch c.Scope {
	case ScopeAccess:
		if c.AppPassID != "" {
			return nil, fmt.Errorf("%w: app password id in a full-access token", ErrInvalidToken)
		}
	case ScopeAppPass, ScopeAppPassPrivileged:
		if c.AppPassID == "" {
			return nil, fmt.Errorf("%w: app password token without its id", ErrInvalidToken)
		}
	default:
		return nil, fmt.Errorf("%w: scope %q is not an access scope", ErrInvalidToken, c.Scope)
	}
	claims := &Claims{
		DID:       syntax.DID(c.Sub),
		Scope:     c.Scope,
		IssuedAt:  time.Unix(c.IAT, 0),
		ExpiresAt: time.Unix(c.EXP, 0),
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		acct, err := s.subject(tx, c.Sub)
		if err != nil {
			return err
		}
		if c.IAT < acct.TokensNotBefore {
			return fmt.Errorf("%w: issued before the last password change", ErrInvalidToken)
		}
		if c.AppPassID == "" {
			return nil
		}
		name, ap, err := appPasswordByID(tx, c.AppPassID)
		if err != nil {
			return err
		}
		if ap == nil || ap.scope() != c.Scope {
			return fmt.Errorf("%w: app password revoked", ErrInvalidToken)
		}
		claims.AppPassword = name
		return nil
	})
	if err != nil {
		return nil, err
	}
	return claims, nil
}

// RevokeAllSessions deletes every refresh token (main and app-password
// sessions), as the reference does when the operator takes the account
// down.
func (s *Store) RevokeAllSessions(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return deleteRefreshTokens(tx, func(*refreshRecord) bool { return true })
	})
}
