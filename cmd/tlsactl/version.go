package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func init() {
	// The version flag of urfave/cli has the alias -v, which 'acme renew'
	// uses for --verbose: keep only --version, on the top level.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and build information", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) { writeVersionText(c.App.Writer, readVersion()) }
}

// versionInfo is what `tlsactl version` reports, from the build information
// the Go toolchain embeds in the binary.
type versionInfo struct {
	Name      string `json:"name"`
	Module    string `json:"module"`
	Version   string `json:"version"` // "(devel)" for a build from a work tree
	Revision  string `json:"vcs_revision,omitempty"`
	Time      string `json:"vcs_time,omitempty"`
	Modified  *bool  `json:"vcs_modified,omitempty"`
	GoVersion string `json:"go_version"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
}

const modulePath = "github.com/tlsactl/tlsactl"

// readVersion returns the build information of the running binary.
func readVersion() versionInfo {
	v := versionInfo{Name: "tlsactl", Module: modulePath, Version: "(devel)",
		GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			m := s.Value == "true"
			v.Modified = &m
		}
	}
	return v
}

func writeVersionText(w io.Writer, v versionInfo) {
	fmt.Fprintf(w, "%s %s\n", v.Name, v.Version)
	fmt.Fprintf(w, "  module:   %s\n", v.Module)
	if v.Revision != "" {
		rev := v.Revision
		if v.Modified != nil && *v.Modified {
			rev += " (modified)"
		}
		fmt.Fprintf(w, "  revision: %s\n", rev)
	}
	if v.Time != "" {
		fmt.Fprintf(w, "  time:     %s\n", v.Time)
	}
	fmt.Fprintf(w, "  go:       %s %s/%s\n", v.GoVersion, v.GOOS, v.GOARCH)
}

func createVersion() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, VCS revision and Go version tlsactl was built with",
		Description: `Prints the module version ("(devel)" for a build from a work tree), the VCS
revision, its time and whether the work tree was modified (when the binary was built
with VCS stamping), the Go version and the target GOOS/GOARCH. 'tlsactl --version'
prints the same text.

EXIT CODES:
   0   printed
   2   bad input

EXAMPLES:
   tlsactl version
   tlsactl version --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: flagJSON, Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return badInput(fmt.Errorf("version takes no arguments"))
			}
			v := readVersion()
			if c.Bool(flagJSON) {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			writeVersionText(c.App.Writer, v)
			return nil
		},
	}
}
