package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(m map[string]string) env { return func(k string) string { return m[k] } }

// TestConfigDefaults: with nothing set, the server listens on
// 127.0.0.1:2583, serves http://localhost:2583, offers .test handles, and
// creates its secrets in the data directory with mode 0600, reusing them on
// the next start.
func TestConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	c, err := loadConfig(envOf(nil), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2583" || c.PublicURL != "http://localhost:2583" || c.ServiceDID != "did:web:localhost" ||
		len(c.ServiceDomains) != 1 || c.ServiceDomains[0] != ".test" || c.BlobLimit != defaultBlobLimit ||
		!c.InviteRequired || len(c.Crawlers) != 0 || c.AppViewURL != "" || c.DIDMethod != "plc" {
		t.Fatalf("defaults: %+v", c)
	}
	for _, f := range []string{"jwt-secret", "admin-password", "plc-rotation-key.hex"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", f, fi.Mode().Perm())
		}
	}
	again, err := loadConfig(envOf(nil), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.JWTSecret, c.JWTSecret) || again.AdminPassword != c.AdminPassword ||
		!bytes.Equal(again.RotationKey.Bytes(), c.RotationKey.Bytes()) {
		t.Fatal("secrets were not reused on the second start")
	}
	// A public hostname gets the network's services by default.
	pub, err := loadConfig(envOf(map[string]string{"PDS_HOSTNAME": "pds.example.com"}), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if pub.PublicURL != "https://pds.example.com" || pub.ServiceDomains[0] != ".pds.example.com" ||
		len(pub.Crawlers) != 1 || pub.AppViewDID != "did:web:api.bsky.app" {
		t.Fatalf("public defaults: %+v", pub)
	}
	// did:web is fine on a public hostname.
	if c, err := loadConfig(envOf(map[string]string{"PDS_HOSTNAME": "pds.example.com", "PDS_DID_METHOD": "web"}), "", t.TempDir()); err != nil || c.DIDMethod != "web" {
		t.Fatalf("did:web on a public hostname: %v", err)
	}
}

// TestConfigErrors: each bad setting stops startup with a message naming it.
func TestConfigErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		data string
		want string
	}{
		{"hostname with scheme", map[string]string{"PDS_HOSTNAME": "https://pds.example.com"}, "", "PDS_HOSTNAME"},
		{"hostname with port", map[string]string{"PDS_HOSTNAME": "pds.example.com:443"}, "", "PDS_HOSTNAME"},
		{"hostname with space", map[string]string{"PDS_HOSTNAME": "my pds"}, "", "PDS_HOSTNAME"},
		{"port", map[string]string{"PDS_PORT": "http"}, "", "PDS_PORT"},
		{"port range", map[string]string{"PDS_PORT": "70000"}, "", "PDS_PORT"},
		{"listen", map[string]string{"PDS_LISTEN_ADDRESS": "nowhere"}, "", "listen address"},
		{"data dir under a file", nil, filepath.Join(file, "data"), "data directory"},
		{"rotation key not hex", map[string]string{"PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX": "zz"}, "", "PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"},
		{"rotation key wrong size", map[string]string{"PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX": "00ff"}, "", "PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX"},
		{"did method", map[string]string{"PDS_DID_METHOD": "key"}, "", "PDS_DID_METHOD"},
		{"did:web on localhost", map[string]string{"PDS_DID_METHOD": "web"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"did:web on localhost, named", map[string]string{"PDS_DID_METHOD": "web", "PDS_HOSTNAME": "localhost"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"did:web on a .test name", map[string]string{"PDS_DID_METHOD": "web", "PDS_HOSTNAME": "pds.test"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"did:web on a .local name", map[string]string{"PDS_DID_METHOD": "web", "PDS_HOSTNAME": "box.local"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"did:web on a .internal name", map[string]string{"PDS_DID_METHOD": "web", "PDS_HOSTNAME": "pds.corp.internal"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"did:web on a .localhost name", map[string]string{"PDS_DID_METHOD": "web", "PDS_HOSTNAME": "pds.localhost"}, "", "PDS_DID_METHOD=web needs a public hostname"},
		{"plc url", map[string]string{"PDS_DID_PLC_URL": "plc.directory"}, "", "PDS_DID_PLC_URL"},
		{"blob limit", map[string]string{"PDS_BLOB_UPLOAD_LIMIT": "-5"}, "", "PDS_BLOB_UPLOAD_LIMIT"},
		{"crawler", map[string]string{"PDS_CRAWLERS": "bsky.network"}, "", "PDS_CRAWLERS"},
		{"retention", map[string]string{"PDS_EVENT_RETENTION": "5m"}, "", "PDS_EVENT_RETENTION"},
		{"appview without did", map[string]string{"PDS_BSKY_APP_VIEW_URL": "https://appview.example.com"}, "", "PDS_BSKY_APP_VIEW_DID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == "" {
				data = t.TempDir()
			}
			_, err := loadConfig(envOf(tc.env), "", data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// TestServeBadConfig: `pds serve` with a bad setting exits 1 with the
// message on stderr, before binding anything.
func TestServeBadConfig(t *testing.T) {
	t.Setenv("PDS_HOSTNAME", "https://bad")
	t.Setenv("PDS_DATA_DIRECTORY", t.TempDir())
	var stdout, stderr bytes.Buffer
	if code := run([]string{"serve"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "PDS_HOSTNAME") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if code := run([]string{"nonsense"}, &stdout, &stderr); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	stdout.Reset()
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "pds ") {
		t.Fatalf("version: %d %q", code, stdout.String())
	}
}
