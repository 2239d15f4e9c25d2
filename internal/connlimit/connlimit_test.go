package connlimit

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// dialFrom opens a connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closed reports whether the server closed c (a read sees EOF at once).
func closed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	ne, ok := err.(net.Error)
	return !(ok && ne.Timeout())
}

func TestCaps(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	exempt := func(ip netip.Addr) bool { return ip == netip.MustParseAddr("127.0.0.9") }
	ln := New(inner, 3, 6, exempt)
	defer ln.Close()
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := inner.Addr().String()
	var a []net.Conn
	for i := 0; i < 5; i++ {
		a = append(a, dialFrom(t, "127.0.0.2", addr))
	}
	for i, c := range a {
		if got, want := closed(c), i >= 3; got != want {
			t.Errorf("connection %d from one address: closed=%v, want %v", i, got, want)
		}
	}
	// Another address still gets in; so does the exempt proxy, up to total.
	if b := dialFrom(t, "127.0.0.3", addr); closed(b) {
		t.Error("a second address was refused")
	}
	for i := 0; i < 2; i++ {
		if c := dialFrom(t, "127.0.0.9", addr); closed(c) {
			t.Errorf("exempt peer refused at %d", i)
		}
	}
	if c := dialFrom(t, "127.0.0.9", addr); !closed(c) {
		t.Error("total cap not applied")
	}
	// Closing frees the slot.
	(<-accepted).Close()
	time.Sleep(50 * time.Millisecond)
	if c := dialFrom(t, "127.0.0.4", addr); closed(c) {
		t.Error("slot not released on close")
	}
	if open, refused := ln.Stats(); open != 6 || refused != 3 {
		t.Errorf("stats: open %d refused %d, want 6 and 3", open, refused)
	}
}

func TestKey(t *testing.T) {
	for _, c := range []struct{ ip, want string }{
		{"192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
	} {
		if got := Key(netip.MustParseAddr(c.ip)).String(); got != c.want {
			t.Errorf("Key(%s) = %s, want %s", c.ip, got, c.want)
		}
	}
}
