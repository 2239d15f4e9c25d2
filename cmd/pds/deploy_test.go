package main

import (
	"bufio"
	"bytes"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
)

// readDeployFile reads a file at the repository root.
func readDeployFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flatTOML reads the simple TOML of fly.toml into "table.key" → raw value
// (arrays of tables are numbered: http_service.checks.0.path).
func flatTOML(t *testing.T, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	table := ""
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case strings.HasPrefix(line, "[["):
			name := strings.Trim(line, "[] ")
			table = name + "." + string(rune('0'+counts[name]))
			counts[name]++
		case strings.HasPrefix(line, "["):
			table = strings.Trim(line, "[] ")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("fly.toml: cannot read %q", line)
			}
			key := strings.TrimSpace(k)
			if table != "" {
				key = table + "." + key
			}
			out[key] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}

// TestFlyToml: one machine that never stops, the volume mounted at the
// data directory, the service on the port the server listens on, and a
// health check on a path the server answers.
func TestFlyToml(t *testing.T) {
	f := flatTOML(t, readDeployFile(t, "fly.toml"))
	for k, want := range map[string]string{
		"mounts.destination":                f["env.PDS_DATA_DIRECTORY"],
		"http_service.internal_port":        f["env.PDS_PORT"],
		"http_service.auto_stop_machines":   "off",
		"http_service.min_machines_running": "1",
		"http_service.force_https":          "true",
		"http_service.checks.0.method":      "GET",
		"http_service.checks.0.path":        "/xrpc/_health",
		"env.PDS_LISTEN_ADDRESS":            "0.0.0.0:" + f["env.PDS_PORT"],
		"build.dockerfile":                  "Dockerfile",
	} {
		if f[k] != want || want == "" {
			t.Errorf("fly.toml %s = %q, want %q", k, f[k], want)
		}
	}
	// The configured environment is one the server accepts.
	vars := map[string]string{"PDS_DATA_DIRECTORY": t.TempDir(), "PDS_PORT": f["env.PDS_PORT"], "PDS_LISTEN_ADDRESS": f["env.PDS_LISTEN_ADDRESS"], "PDS_HOSTNAME": "pds.example.com"}
	cfg, err := loadConfig(func(k string) string { return vars[k] }, "", "")
	if err != nil || cfg.Listen != "0.0.0.0:"+f["env.PDS_PORT"] {
		t.Fatalf("fly.toml env: %v %+v", err, cfg)
	}
	s := startServer(t, nil)
	if st, _ := s.call(t, "GET", strings.TrimPrefix(f["http_service.checks.0.path"], "/xrpc/"), "", "", nil); st != 200 {
		t.Fatalf("the health check path answers %d", st)
	}
}

// TestDockerfile: a static (cgo-less) build, a non-root user, the data
// volume where the server keeps its data, the exposed port it listens on,
// and a HEALTHCHECK that works without a shell: `pds healthcheck` against
// a real server.
func TestDockerfile(t *testing.T) {
	d := readDeployFile(t, "Dockerfile")
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(PDS_[A-Z_]+)=(\S+)`).FindAllStringSubmatch(d, -1) {
		env[m[1]] = m[2]
	}
	for _, want := range []string{
		"CGO_ENABLED=0 go build",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"USER nonroot:nonroot",
		`ENTRYPOINT ["/pds"]`,
		`CMD ["serve"]`,
		"VOLUME " + env["PDS_DATA_DIRECTORY"],
		"EXPOSE " + env["PDS_PORT"],
		`HEALTHCHECK --interval=30s --timeout=6s --start-period=10s CMD ["/pds", "healthcheck"]`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if env["PDS_LISTEN_ADDRESS"] != "0.0.0.0:"+env["PDS_PORT"] {
		t.Errorf("Dockerfile listens on %q, not on all interfaces at PDS_PORT", env["PDS_LISTEN_ADDRESS"])
	}

	// The healthcheck command, against a server and against nothing.
	s := startServer(t, nil)
	u, _ := url.Parse(s.URL)
	t.Setenv("PDS_DATA_DIRECTORY", t.TempDir())
	t.Setenv("PDS_PORT", u.Port())
	var out, errb bytes.Buffer
	if code := run([]string{"healthcheck"}, &out, &errb); code != 0 {
		t.Fatalf("healthcheck of a running server: %d %s", code, errb.String())
	}
	s.stop()
	if code := run([]string{"healthcheck"}, &out, &errb); code != 1 {
		t.Fatalf("healthcheck of a stopped server: %d", code)
	}
}
