package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Vectors computed with Node's crypto.scryptSync(password, saltHexString, 64),
// which is how the reference PDS hashes (account passwords with a random
// salt, app passwords with the first 16 bytes of sha256(did) as salt).
func TestPasswordHashCompat(t *testing.T) {
	tests := []struct {
		name, password, stored string
	}{
		{"account password", "hunter2",
			"0123456789abcdef0123456789abcdef:4971254c23d915ca81fee56d02cb00bf641a7461bd516d17175bcb314c8abad13e74b1c8f6e11649cb30cee8f888fdd4c8baee55535fd8b628d65e8c655edffe"},
		{"app password", "abcd-efgh-ijkl-mnop",
			"e253131024780eb99e0d600853180dac:4d57b17fa65b9c1561e5c4c56864fc7610f79b7984335ea36be39716bbd469aa3b220e34c764ca025ac867f0727365a05561db772b3be2d55105e839df71bd1a"},
	}
	for _, tc := range tests {
		ok, err := verifyPassword(tc.password, tc.stored)
		if err != nil || !ok {
			t.Errorf("%s: verifyPassword = %v, %v", tc.name, ok, err)
		}
		if ok, _ := verifyPassword(tc.password+"x", tc.stored); ok {
			t.Errorf("%s: wrong password verified", tc.name)
		}
	}
	if got, err := hashAppPassword(testDID, "abcd-efgh-ijkl-mnop"); err != nil || got != tests[1].stored {
		t.Errorf("hashAppPassword = %q, %v", got, err)
	}
	for _, stored := range []string{"", "nocolon", ":abcd"} {
		if ok, _ := verifyPassword("hunter2", stored); ok {
			t.Errorf("malformed hash %q verified", stored)
		}
	}
	h1, _ := hashPassword("hunter2")
	h2, _ := hashPassword("hunter2")
	if h1 == h2 {
		t.Error("account password hashes are not salted")
	}
}

func TestMinLoginDuration(t *testing.T) {
	s, _ := newTestAccount(t)
	s.minLogin = 150 * time.Millisecond
	ctx := context.Background()
	for _, identifier := range []string{"bob.test", testHandle} {
		start := time.Now()
		if _, err := s.Login(ctx, identifier, "wrong"); !errors.Is(err, ErrInvalidLogin) {
			t.Fatal(err)
		}
		if d := time.Since(start); d < s.minLogin {
			t.Errorf("failed login for %q took %v, want at least %v", identifier, d, s.minLogin)
		}
	}
	// A cancelled context ends the wait.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.Login(cctx, "bob.test", "wrong")
	if d := time.Since(start); d >= s.minLogin {
		t.Errorf("cancelled login took %v", d)
	}
}
