// Package connlimit caps the open TCP connections of each client address
// and in total, at accept time, so that one client cannot take every file
// descriptor (thousands of trickling bodies or slow headers).
package connlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Listener wraps a net.Listener. A connection over a cap is closed as soon
// as it is accepted (before any byte is read); Accept then waits for the
// next one, so the server's accept loop never sees the refusal as an error.
type Listener struct {
	net.Listener
	perAddr, total int
	exempt         func(netip.Addr) bool

	mu    sync.Mutex
	open  map[netip.Prefix]int
	count int
	// Refused counts connections closed for a cap.
	refused int64
}

// New caps ln at perAddr connections per client key and total overall.
// The key of an IPv4 client is its address; of an IPv6 client its /64
// (one machine usually holds a whole /64). exempt names peers that are not
// clients but proxies in front of many (nil: none); they count toward total
// only.
func New(ln net.Listener, perAddr, total int, exempt func(netip.Addr) bool) *Listener {
	return &Listener{Listener: ln, perAddr: perAddr, total: total, exempt: exempt, open: map[netip.Prefix]int{}}
}

// Key is the bucket of a client address: the address itself for IPv4 (or
// IPv4-mapped IPv6), its /64 for IPv6.
func Key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

// Accept returns the next connection within the caps.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, limited := l.keyOf(c)
		if l.admit(key, limited) {
			return &conn{Conn: c, l: l, key: key, limited: limited}, nil
		}
		c.Close()
	}
}

func (l *Listener) keyOf(c net.Conn) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	if l.exempt != nil && l.exempt(ip) {
		return netip.Prefix{}, false
	}
	return Key(ip), true
}

func (l *Listener) admit(key netip.Prefix, limited bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count >= l.total || (limited && l.open[key] >= l.perAddr) {
		l.refused++
		return false
	}
	l.count++
	if limited {
		l.open[key]++
	}
	return true
}

func (l *Listener) release(key netip.Prefix, limited bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count--
	if limited {
		if l.open[key]--; l.open[key] <= 0 {
			delete(l.open, key)
		}
	}
}

// Stats returns the open connections and the connections refused so far.
func (l *Listener) Stats() (open int, refused int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count, l.refused
}

type conn struct {
	net.Conn
	l       *Listener
	key     netip.Prefix
	limited bool
	once    sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key, c.limited) })
	return err
}
