package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/tlsa"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxInputSize bounds every file tlsactl reads: certificates, keys, CSRs and
// RRsets are kilobytes; anything this large is a mistake.
const maxInputSize = 8 << 20

// readInput reads a certificate, key, CSR or RRset file ("-" is stdin) with a
// size limit, and returns one-line errors that name the file and the fix.
// readKeyInput reads a private key that tlsactl will install on a server:
// like readInput, but a file that group or others can read is refused, as
// OpenSSH refuses such a private key (the error says the chmod to run).
func readKeyInput(path string, stdin io.Reader) ([]byte, error) {
	if path != "-" {
		if _, err := os.Stat(path); err == nil {
			if err := safefile.CheckPrivate(path); err != nil {
				return nil, err
			}
		}
	}
	return readInput(path, stdin)
}

func readInput(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxInputSize+1))
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		if len(b) > maxInputSize {
			return nil, fmt.Errorf("standard input: larger than %d MiB; give a certificate, key or CSR file", maxInputSize>>20)
		}
		return b, nil
	}
	return safefile.ReadLimited(path, maxInputSize, false, "; is this really a certificate, key or CSR?")
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readMaterialFile reads path ("-" is stdin) and parses every certificate,
// key and CSR in it.
func readMaterialFile(path string, stdin io.Reader) ([]tlsa.Material, error) {
	b, err := readInput(path, stdin)
	if err != nil {
		return nil, err
	}
	return tlsa.ParseMaterial(path, b)
}

// readCertificates reads the certificates of a PEM or DER file; a file with
// none is an error naming what it holds instead, followed by hint if given.
func readCertificates(path string, stdin io.Reader, hint string) ([]*x509.Certificate, error) {
	ms, err := readMaterialFile(path, stdin)
	if err != nil {
		return nil, err
	}
	certs := tlsa.Certificates(ms)
	if len(certs) == 0 {
		if hint != "" {
			hint = "; " + hint
		}
		return nil, fmt.Errorf("%s: no certificate found (found %s)%s", path, kindsOf(ms), hint)
	}
	return certs, nil
}

// expandPaths expands glob patterns ("certs/*.pem") that do not name an
// existing file; each pattern's matches are sorted. A pattern without matches
// is an error.
func expandPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		if p == "-" || !strings.ContainsAny(p, "*?[") {
			out = append(out, p)
			continue
		}
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
			continue
		}
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("%s: bad glob pattern: %w", p, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("%s: no file matches this pattern", p)
		}
		sort.Strings(m)
		out = append(out, m...)
	}
	return out, nil
}
