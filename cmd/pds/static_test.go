package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// readmeBuild is the build command the README gives; TestStaticBinary runs
// it, so the README cannot promise a static binary it does not make.
const readmeBuild = "CGO_ENABLED=0 go build -o pds ./cmd/pds"

// TestStaticBinary builds the server with the README's command and checks
// the result is a static executable: no ELF interpreter, no shared
// libraries (a plain `go build` with cgo available links libc).
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("checks an ELF binary")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), readmeBuild) {
		t.Fatalf("README.md no longer says %q", readmeBuild)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go command to build with")
		}
	}
	out := filepath.Join(t.TempDir(), "pds")
	args := strings.Fields(readmeBuild)[2:] // build -o pds ./cmd/pds
	args[2] = out
	cmd := exec.Command(goBin, args...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", readmeBuild, err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("the binary is dynamically linked (program header %v)", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Fatalf("the binary needs shared libraries %v (%v)", libs, err)
	}
}
