package api

import (
	"net/netip"
	"testing"
)

// TestSubscriberSlots: one address (or IPv6 /64) gets at most
// maxSubscribersPerAddr slots, another address still gets one, and a
// released slot is free again.
func TestSubscriberSlots(t *testing.T) {
	var s subscriberSlots
	attacker := netip.MustParseAddr("2001:db8:1:2::1")
	var keys []netip.Prefix
	for i := 0; i < 1024; i++ {
		ip := attacker
		if i%2 == 1 {
			ip = netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
		}
		if k, ok := s.take(ip); ok {
			keys = append(keys, k)
		}
	}
	if len(keys) != maxSubscribersPerAddr {
		t.Fatalf("one /64 took %d slots, want %d", len(keys), maxSubscribersPerAddr)
	}
	relay, ok := s.take(netip.MustParseAddr("198.51.100.7"))
	if !ok {
		t.Fatal("the relay found no slot")
	}
	s.release(relay)
	s.release(keys[0])
	if _, ok := s.take(attacker); !ok {
		t.Fatal("a released slot was not free again")
	}
}
