package deploy

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tlsactl/tlsactl/internal/safefile"
	"github.com/tlsactl/tlsactl/rollover"
)

// backupSuffix names the on-disk copy of a file's previous content, written
// before the file is replaced and left in place (for recovery by hand after a
// crash; Deploy itself restores from memory).
const backupSuffix = ".tlsactl-prev"

// target is a file to write.
type target struct {
	path    string // symlinks resolved, checked by resolve
	what    string // "key file", … for messages
	viaLink bool   // reached through a symbolic link: the owner is not inherited
	data    []byte
	mode    os.FileMode
}

// fileState is a file as it was before Deploy.
type fileState struct {
	path     string
	what     string
	exists   bool
	data     []byte
	mode     os.FileMode
	uid, gid int
}

// plan returns the files to write for p, key first.
func (d *FileDeployer) plan(p *Parsed) ([]target, error) {
	var chainPEM []byte
	for _, c := range p.Chain {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return d.layout(p.KeyPEM, chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Leaf.Raw}))
}

// layout returns the files that hold key, chain and leaf, key first: the key
// file, the chain file unless it is the key file (then that one file holds
// the key followed by the chain, with the key's mode), and the leaf-only file
// when one is configured (leafPEM is ignored otherwise).
func (d *FileDeployer) layout(keyPEM, chainPEM, leafPEM []byte) ([]target, error) {
	key, err := d.resolve("key file", d.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	chain, err := d.resolve("chain file", d.cfg.ChainFile)
	if err != nil {
		return nil, err
	}
	var files []target
	if key.path == chain.path {
		combined := append(append([]byte{}, keyPEM...), chainPEM...)
		files = append(files, target{path: key.path, what: "key file", viaLink: key.viaLink || chain.viaLink, data: combined, mode: d.cfg.KeyMode})
	} else {
		files = append(files,
			target{path: key.path, what: "key file", viaLink: key.viaLink, data: keyPEM, mode: d.cfg.KeyMode},
			target{path: chain.path, what: "chain file", viaLink: chain.viaLink, data: chainPEM, mode: d.cfg.CertMode})
	}
	if d.cfg.CertFile != "" {
		cert, err := d.resolve("certificate file", d.cfg.CertFile)
		if err != nil {
			return nil, err
		}
		if cert.path == key.path || cert.path == chain.path {
			return nil, fmt.Errorf("deploy: %s resolves to the key or chain file: give the leaf-only certificate its own file", d.cfg.CertFile)
		}
		files = append(files, target{path: cert.path, what: "certificate file", viaLink: cert.viaLink, data: leafPEM, mode: d.cfg.CertMode})
	}
	return files, nil
}

// owner returns the ids a new file f gets: the configured ones, else those
// of the file it replaces (prev) — unless f was reached through a symbolic
// link, whose target must not pass its owner on: then the process's
// (-1, leave as created).
func (d *FileDeployer) owner(f target, prev fileState) (uid, gid int) {
	uid, gid = d.uid, d.gid
	if prev.exists && !f.viaLink {
		if uid < 0 {
			uid = prev.uid
		}
		if gid < 0 {
			gid = prev.gid
		}
	}
	return uid, gid
}

// restoreStates returns what the files must hold to put r back: r's key and
// chain bytes as they are (byte for byte) and the leaf of r's chain, with the
// configured modes, and the owner a deploy gives them (see owner; prev are
// the files found, in the same order). An empty key (the key file did not
// exist before the rollover) makes a file that is removed on restore. It
// fails, before anything is touched, when a leaf-only file is configured and
// r's chain holds no certificate.
func (d *FileDeployer) restoreStates(r rollover.Material, prev []fileState) ([]fileState, error) {
	var leafPEM []byte
	if d.cfg.CertFile != "" {
		rest := r.ChainPEM
		for {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if b.Type == "CERTIFICATE" {
				leafPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
				break
			}
		}
		if leafPEM == nil {
			return nil, fmt.Errorf("deploy: %w: the material to restore on failure holds no PEM certificate, so %s could not be restored: nothing was changed; pass the chain that was deployed before the rollover",
				ErrInvalidMaterial, d.cfg.CertFile)
		}
	}
	files, err := d.layout(r.KeyPEM, r.ChainPEM, leafPEM)
	if err != nil {
		return nil, err
	}
	out := make([]fileState, len(files))
	for i, f := range files {
		uid, gid := d.owner(f, prev[i])
		out[i] = fileState{path: f.path, what: f.what, exists: len(f.data) > 0, data: f.data, mode: f.mode, uid: uid, gid: gid}
	}
	return out, nil
}

// sameContent reports whether the files found (a) already hold b.
func sameContent(a, b []fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].path != b[i].path || a[i].exists != b[i].exists || !bytes.Equal(a[i].data, b[i].data) {
			return false
		}
	}
	return true
}

// snapshot reads the current content, mode and owner of each target. The
// files are opened with O_NOFOLLOW: resolve followed every link, so a link
// found now was put there since.
func snapshot(files []target) ([]fileState, error) {
	var out []fileState
	for _, f := range files {
		st := fileState{path: f.path, what: f.what, uid: -1, gid: -1}
		data, fi, err := readNoFollow(f.path)
		switch {
		case err != nil:
			return nil, fmt.Errorf("the %s %s: %w", f.what, f.path, err)
		case fi == nil:
			out = append(out, st)
			continue
		}
		st.exists, st.data, st.mode = true, data, fi.Mode().Perm()
		st.uid, st.gid = fileUID(fi), fileGID(fi)
		out = append(out, st)
	}
	return out, nil
}

// readNoFollow reads the regular file at path without following a symbolic
// link there. A missing file gives nil, nil, nil.
func readNoFollow(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, nil
	case errors.Is(err, syscall.ELOOP):
		return nil, nil, fmt.Errorf("is a symbolic link now, though it was not when its path was checked: run again")
	case err != nil:
		return nil, nil, fmt.Errorf("%w: check the path and this user's permissions", unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("not a regular file (%v): point the configuration at the file the server reads", fi.Mode().Type())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	return b, fi, nil
}

// backup writes each existing file's content to <file>.tlsactl-prev.
func (d *FileDeployer) backup(prev []fileState) error {
	var stage []*safefile.File
	for _, p := range prev {
		if !p.exists {
			continue
		}
		s, err := d.stageFile(p.what, p.path+backupSuffix, p.data, p.mode, p.uid, p.gid)
		if err != nil {
			discard(stage)
			return err
		}
		stage = append(stage, s)
	}
	_, err := commit(stage)
	return err
}

// install writes the new files: all of them to temporary files first, then
// renames them in order (key first). The owner is the configured one, else
// that of the replaced file (see owner). It reports whether a file was
// replaced.
func (d *FileDeployer) install(files []target, prev []fileState) (renamed bool, err error) {
	var stage []*safefile.File
	for i, f := range files {
		uid, gid := d.owner(f, prev[i])
		s, err := d.stageFile(f.what, f.path, f.data, f.mode, uid, gid)
		if err != nil {
			discard(stage)
			return false, err
		}
		stage = append(stage, s)
	}
	n, err := commit(stage)
	return n > 0, err
}

// putBack writes the files of prev (removing those that did not exist).
func (d *FileDeployer) putBack(prev []fileState) error {
	var stage []*safefile.File
	for _, p := range prev {
		if !p.exists {
			continue
		}
		s, err := d.stageFile(p.what, p.path, p.data, p.mode, p.uid, p.gid)
		if err != nil {
			discard(stage)
			return err
		}
		stage = append(stage, s)
	}
	if _, err := commit(stage); err != nil {
		return err
	}
	var errs []error
	for _, p := range prev {
		if !p.exists {
			if err := os.Remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			_ = safefile.SyncDir(filepath.Dir(p.path)) // best effort
		}
	}
	return errors.Join(errs...)
}

// stageFile writes data to a temporary file in path's directory (checked
// again as opened, see checkParent) with mode and owner (uid/gid -1: leave
// as created), and fsyncs it (safefile.Stage).
func (d *FileDeployer) stageFile(what, path string, data []byte, mode os.FileMode, uid, gid int) (*safefile.File, error) {
	return safefile.Stage(path, data, safefile.Options{
		Mode: mode, Chown: uid >= 0 || gid >= 0, UID: uid, GID: gid,
		CheckDir: d.checkParent(what, path),
	})
}

// commit renames the staged files into place, in order, back to back, then
// fsyncs their directories (best effort: the files are in place either
// way). It returns how many were renamed; on error the rest are discarded.
func commit(stage []*safefile.File) (int, error) {
	for i, s := range stage {
		if err := s.Commit(); err != nil {
			discard(stage)
			return i, err
		}
	}
	for _, s := range stage {
		_ = s.Close()
	}
	return len(stage), nil
}

// discard closes staged files: those not renamed are removed.
func discard(stage []*safefile.File) {
	for _, s := range stage {
		_ = s.Close()
	}
}
