package identity

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

// TestPublicAddrEmbeddedIPv4: IPv6 spellings of private IPv4 addresses are
// refused (::7f00:1 was accepted), while public transition addresses pass.
func TestPublicAddrEmbeddedIPv4(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
	}{
		{"::7f00:1", false},                  // IPv4-compatible 127.0.0.1
		{"::a00:1", false},                   // IPv4-compatible 10.0.0.1
		{"::808:808", false},                 // IPv4-compatible, deprecated whatever it holds
		{"::ffff:127.0.0.1", false},          // IPv4-mapped
		{"::ffff:a9fe:a9fe", false},          // mapped 169.254.169.254
		{"::ffff:0:7f00:1", false},           // IPv4-translated
		{"64:ff9b::7f00:1", false},           // NAT64
		{"64:ff9b::808:808", false},          // NAT64 of a public address: still refused
		{"64:ff9b:1::a00:1", false},          // local-use NAT64
		{"2002:7f00:1::1", false},            // 6to4 of 127.0.0.1
		{"2002:c0a8:101::1", false},          // 6to4 of 192.168.1.1
		{"2002:808:808::1", true},            // 6to4 of 8.8.8.8
		{"2001:0:7f00:1::1", false},          // Teredo server 127.0.0.1
		{"2001:0:808:808::80ff:fffe", false}, // Teredo client 127.0.0.1 (obfuscated)
		{"2001:0:808:808::f7f7:f7f7", true},  // Teredo, public both
		{"::ffff:8.8.8.8", true},
		{"2606:4700:4700::1111", true},
	} {
		if got := PublicAddr(netip.MustParseAddr(c.addr)); got != c.public {
			t.Errorf("PublicAddr(%s) = %v, want %v", c.addr, got, c.public)
		}
	}
}

// TestSafeClientRefusesEmbeddedLoopback: a request to a server on
// 127.0.0.1 spelled as an IPv6 address is refused before any connection.
func TestSafeClientRefusesEmbeddedLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	client := NewSafeClient(0, false)
	for _, host := range []string{"[::ffff:127.0.0.1]", "[::7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]"} {
		u := "https://" + host + ":" + port + "/xrpc/_health"
		if err := CheckTarget(context.Background(), u, false); !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("CheckTarget(%s) = %v", u, err)
		}
		resp, err := client.Get(u)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, ErrForbiddenTarget) {
			t.Errorf("GET %s: %v, want ErrForbiddenTarget", u, err)
		}
	}
	select {
	case <-accepted:
		t.Fatal("the guard let a connection reach 127.0.0.1")
	default:
	}
}
