package deploy

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/tlsactl/tlsactl/rollover"
)

// Snapshot reads the key and chain files as they are now (symbolic links
// followed, under the checks a deploy makes: see Config.KeyFile), for the
// engine to keep before a rollover's first deploy and pass back to Deploy as
// the material to restore on failure.
//
// The bytes are returned as they are on disk, so that a restore writes them
// back byte for byte. A file that does not exist (or whose directory does
// not) gives an empty field, not an error (the first deploy ever). When
// KeyFile and ChainFile are the same file, KeyPEM is its content up to the
// end of its last private key and ChainPEM the rest, so that KeyPEM followed
// by ChainPEM is the file again; if a certificate comes before the key there,
// the two are separated into their PEM blocks instead (key blocks, then
// certificate blocks, other text dropped), and a combined file without any
// certificate gives an empty ChainPEM. Any other error reading a file
// (permissions, not a regular file, a path through a non-directory, a
// symbolic link or directory the deploy would refuse) is returned, naming
// the path. The leaf-only CertFile is not read: a restore writes the leaf of
// ChainPEM.
func (d *FileDeployer) Snapshot(ctx context.Context) (rollover.Material, error) {
	if err := ctx.Err(); err != nil {
		return rollover.Material{}, fmt.Errorf("deploy: reading the current key and chain files: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key, keyPath, err := d.readCurrent("key file", d.cfg.KeyFile)
	if err != nil {
		return rollover.Material{}, err
	}
	chainPath, err := d.resolveCurrent("chain file", d.cfg.ChainFile)
	if err != nil {
		return rollover.Material{}, err
	}
	if keyPath != "" && keyPath == chainPath {
		return splitCombined(key), nil
	}
	chain, _, err := d.readCurrent("chain file", d.cfg.ChainFile)
	if err != nil {
		return rollover.Material{}, err
	}
	return rollover.Material{KeyPEM: key, ChainPEM: chain}, nil
}

// resolveCurrent resolves the configured path p like a deploy; a directory
// that does not exist gives "" without error.
func (d *FileDeployer) resolveCurrent(what, p string) (string, error) {
	r, err := d.resolve(what, p)
	if errors.Is(err, errNoDir) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return r.path, nil
}

// readCurrent returns the content of the regular file at the configured
// path p and its resolved path, or nil when there is none.
func (d *FileDeployer) readCurrent(what, p string) ([]byte, string, error) {
	path, err := d.resolveCurrent(what, p)
	if err != nil || path == "" {
		return nil, "", err
	}
	b, fi, err := readNoFollow(path)
	if err != nil {
		return nil, "", fmt.Errorf("deploy: reading the %s %s: %w", what, path, err)
	}
	if fi == nil {
		return nil, path, nil
	}
	return b, path, nil
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
