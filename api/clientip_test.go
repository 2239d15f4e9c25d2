package api

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	def := &server{cfg: Config{TrustedProxies: DefaultTrustedProxies}}
	none := &server{cfg: Config{TrustedProxies: []netip.Prefix{}}}
	cases := []struct {
		name string
		s    *server
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer, XFF ignored", def, "203.0.113.5:4000", []string{"1.2.3.4"}, "203.0.113.5"},
		{"trusted peer, no XFF", def, "127.0.0.1:4000", nil, "127.0.0.1"},
		{"trusted peer names the client", def, "127.0.0.1:4000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"a spoofed leftmost hop is ignored", def, "127.0.0.1:4000", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"chained trusted proxies", def, "127.0.0.1:4000", []string{"1.2.3.4, 10.0.0.7"}, "1.2.3.4"},
		{"several headers", def, "10.1.1.1:4000", []string{"6.6.6.6", "1.2.3.4"}, "1.2.3.4"},
		{"IPv6 via unique-local proxy", def, "[fdaa::3]:4000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"v4-mapped peer", def, "[::ffff:127.0.0.1]:4000", []string{"1.2.3.4"}, "1.2.3.4"},
		{"malformed nearest hop: stop at the proxy", def, "127.0.0.1:4000", []string{"1.2.3.4, nonsense"}, "127.0.0.1"},
		{"nothing trusted", none, "127.0.0.1:4000", []string{"1.2.3.4"}, "127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.s.clientIP(r); got != tc.want {
				t.Fatalf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
}
