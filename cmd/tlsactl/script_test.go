package main

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run this test binary as the "tlsactl" command.
func TestMain(m *testing.M) {
	testscript.Main(cleanupM{m}, map[string]func(){
		"tlsactl": func() {
			os.Exit(run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
		},
	})
}

// cleanupM runs the tests, then removes the binaries they built.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	removeBuilds()
	return code
}

// TestScript runs the golden CLI flows in testdata/script/*.txtar. The
// scripts make their certificates and keys with openssl and compute the
// expected records with openssl pipelines, never with tlsactl.
func TestScript(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found; apt-get install -y openssl")
		}
		t.Skip("openssl not found; apt-get install -y openssl")
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
	})
}
