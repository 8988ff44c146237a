package deploy

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlsactl/tlsactl/rollover"
)

// Snapshot reads the key and chain files as they are now (symbolic links
// followed), for the engine to keep before a rollover's first deploy and pass
// back to Deploy as the material to restore on failure.
//
// The bytes are returned as they are on disk, so that a restore writes them
// back byte for byte. A file that does not exist gives an empty field, not an
// error (the first deploy ever). When KeyFile and ChainFile are the same file,
// KeyPEM is its content up to the end of its last private key and ChainPEM the
// rest, so that KeyPEM followed by ChainPEM is the file again; if a
// certificate comes before the key there, the two are separated into their
// PEM blocks instead (key blocks, then certificate blocks, other text
// dropped), and a combined file without any certificate gives an empty
// ChainPEM. Any other error reading a file (permissions, not a regular file,
// a path through a non-directory) is returned, naming the path. The
// leaf-only CertFile is not read: a restore writes the leaf of ChainPEM.
func (d *FileDeployer) Snapshot(ctx context.Context) (rollover.Material, error) {
	if err := ctx.Err(); err != nil {
		return rollover.Material{}, fmt.Errorf("deploy: reading the current key and chain files: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	keyPath, chainPath := current(d.cfg.KeyFile), current(d.cfg.ChainFile)
	key, err := readCurrent(keyPath, "key file")
	if err != nil {
		return rollover.Material{}, err
	}
	if keyPath == chainPath {
		return splitCombined(key), nil
	}
	chain, err := readCurrent(chainPath, "chain file")
	if err != nil {
		return rollover.Material{}, err
	}
	return rollover.Material{KeyPEM: key, ChainPEM: chain}, nil
}

// current returns the absolute path of the file at p now: symbolic links
// followed when they lead to a file, else p made absolute.
func current(p string) string {
	abs := absPath(p)
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// readCurrent returns the content of the regular file at path, or nil when
// there is none.
func readCurrent(path, what string) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("deploy: reading the %s %s: %w: check the path and this user's permissions", what, path, err)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return fail(err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("deploy: reading the %s %s: not a regular file (%v): point the configuration at the file the server reads", what, path, fi.Mode().Type())
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // removed since the Stat
	}
	if err != nil {
		return fail(err)
	}
	return b, nil
}

// splitCombined splits the content of a file holding key and chain; see
// Snapshot.
func splitCombined(data []byte) rollover.Material {
	var (
		keys, certs []byte
		keyEnd      = -1 // end of the last private key block
		certFirst   bool // a certificate comes before a private key
		haveCert    bool
		rest        = data
	)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			keyEnd = len(data) - len(rest)
			keys = append(keys, pem.EncodeToMemory(b)...)
			certFirst = certFirst || haveCert
		case b.Type == "CERTIFICATE":
			haveCert = true
			certs = append(certs, pem.EncodeToMemory(b)...)
		}
	}
	switch {
	case !haveCert:
		return rollover.Material{KeyPEM: data}
	case keyEnd < 0:
		return rollover.Material{ChainPEM: data}
	case certFirst:
		return rollover.Material{KeyPEM: keys, ChainPEM: certs}
	}
	return rollover.Material{KeyPEM: data[:keyEnd:keyEnd], ChainPEM: data[keyEnd:]}
}
