package auth_test

import (
	"testing"
	"time"

	"github.com/pdsbox/pds/auth"
)

// TestJTICacheReplay: a service token's jti is good once until it expires.
func TestJTICacheReplay(t *testing.T) {
	now := time.Unix(1_790_000_000, 0)
	c := auth.NewJTICache()
	tok := &auth.ServiceClaims{Iss: "did:plc:abc", Jti: "j1", Exp: now.Unix() + 60}
	if !c.Use(tok, now) {
		t.Fatal("first use refused")
	}
	if c.Use(tok, now.Add(30*time.Second)) {
		t.Fatal("replay accepted")
	}
	other := *tok
	other.Iss = "did:plc:other"
	if !c.Use(&other, now) {
		t.Fatal("same jti from another issuer refused")
	}
	if !c.Use(&auth.ServiceClaims{Iss: "did:plc:abc", Exp: now.Unix() + 60}, now) {
		t.Fatal("a token without jti refused")
	}
}
