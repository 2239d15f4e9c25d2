package api

import (
	"net/netip"
	"sync"

	"github.com/pdsbox/pds/internal/connlimit"
)

// Firehose slots. The global cap (maxSubscribers) keeps the server alive;
// the per-address cap, far below it, keeps one client from taking every
// slot, so a relay always finds one: 1,024 idle sockets from one address
// used to leave the relay with 503.
const (
	// maxSubscribers bounds concurrent subscribeRepos connections.
	maxSubscribers = 1024
	// maxSubscribersPerAddr bounds them per client address (IPv4 address
	// or IPv6 /64). A relay needs one; a few consumers behind one NAT fit.
	maxSubscribersPerAddr = 16
)

// subscriberSlots counts open firehose connections in total and per client
// address. The zero value is ready to use.
type subscriberSlots struct {
	mu     sync.Mutex
	total  int
	byAddr map[netip.Prefix]int
}

// take reserves a slot for the client at ip; ok is false when the client
// or the server is at its cap. release must be called after a successful
// take.
func (s *subscriberSlots) take(ip netip.Addr) (key netip.Prefix, ok bool) {
	key = connlimit.Key(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr == nil {
		s.byAddr = map[netip.Prefix]int{}
	}
	if s.total >= maxSubscribers || s.byAddr[key] >= maxSubscribersPerAddr {
		return key, false
	}
	s.total++
	s.byAddr[key]++
	return key, true
}

func (s *subscriberSlots) release(key netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.byAddr[key]--; s.byAddr[key] <= 0 {
		delete(s.byAddr, key)
	}
}
