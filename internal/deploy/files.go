package deploy

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/tlsactl/tlsactl/rollover"
)

// backupSuffix names the on-disk copy of a file's previous content, written
// before the file is replaced and left in place (for recovery by hand after a
// crash; Deploy itself restores from memory).
const backupSuffix = ".tlsactl-prev"

// target is a file to write.
type target struct {
	path string // symlinks resolved
	data []byte
	mode os.FileMode
}

// fileState is a file as it was before Deploy.
type fileState struct {
	path     string
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
	keyPath, err := resolve(d.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	chainPath, err := resolve(d.cfg.ChainFile)
	if err != nil {
		return nil, err
	}
	var files []target
	if keyPath == chainPath {
		combined := append(append([]byte{}, keyPEM...), chainPEM...)
		files = append(files, target{path: keyPath, data: combined, mode: d.cfg.KeyMode})
	} else {
		files = append(files,
			target{path: keyPath, data: keyPEM, mode: d.cfg.KeyMode},
			target{path: chainPath, data: chainPEM, mode: d.cfg.CertMode})
	}
	if d.cfg.CertFile != "" {
		certPath, err := resolve(d.cfg.CertFile)
		if err != nil {
			return nil, err
		}
		if certPath == keyPath || certPath == chainPath {
			return nil, fmt.Errorf("deploy: %s resolves to the key or chain file: give the leaf-only certificate its own file", d.cfg.CertFile)
		}
		files = append(files, target{path: certPath, data: leafPEM, mode: d.cfg.CertMode})
	}
	return files, nil
}

// restoreStates returns what the files must hold to put r back: r's key and
// chain bytes as they are (byte for byte) and the leaf of r's chain, with the
// configured modes, and the configured owner or else that of the file found
// (prev, in the same order). An empty key (the key file did not exist before
// the rollover) makes a file that is removed on restore. It fails, before
// anything is touched, when a leaf-only file is configured and r's chain
// holds no certificate.
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
		uid, gid := d.uid, d.gid
		if uid < 0 && prev[i].exists {
			uid = prev[i].uid
		}
		if gid < 0 && prev[i].exists {
			gid = prev[i].gid
		}
		out[i] = fileState{path: f.path, exists: len(f.data) > 0, data: f.data, mode: f.mode, uid: uid, gid: gid}
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

// resolve makes path absolute and follows symbolic links; a path that does
// not exist yet is kept (its directory must exist).
func resolve(path string) (string, error) {
	abs := absPath(path)
	r, err := filepath.EvalSymlinks(abs)
	if err == nil {
		return r, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		if fi, derr := os.Stat(filepath.Dir(abs)); derr != nil || !fi.IsDir() {
			return "", fmt.Errorf("deploy: the directory of %s does not exist: create it or fix the path", abs)
		}
		return abs, nil
	}
	return "", fmt.Errorf("deploy: %w", err)
}

// snapshot reads the current content, mode and owner of each target.
func snapshot(files []target) ([]fileState, error) {
	var out []fileState
	for _, f := range files {
		st := fileState{path: f.path, uid: -1, gid: -1}
		fi, err := os.Stat(f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, st)
			continue
		case err != nil:
			return nil, err
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%s is not a regular file (%v): point the configuration at the file the server reads", f.path, fi.Mode().Type())
		}
		if st.data, err = os.ReadFile(f.path); err != nil {
			return nil, err
		}
		st.exists, st.mode = true, fi.Mode().Perm()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.uid, st.gid = int(sys.Uid), int(sys.Gid)
		}
		out = append(out, st)
	}
	return out, nil
}

// backup writes each existing file's content to <file>.tlsactl-prev.
func backup(prev []fileState) error {
	var stage []staged
	for _, p := range prev {
		if !p.exists {
			continue
		}
		s, err := stageFile(p.path+backupSuffix, p.data, p.mode, p.uid, p.gid)
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
// that of the replaced file. It reports whether a file was replaced.
func (d *FileDeployer) install(files []target, prev []fileState) (renamed bool, err error) {
	var stage []staged
	for i, f := range files {
		uid, gid := d.uid, d.gid
		if uid < 0 && prev[i].exists {
			uid = prev[i].uid
		}
		if gid < 0 && prev[i].exists {
			gid = prev[i].gid
		}
		s, err := stageFile(f.path, f.data, f.mode, uid, gid)
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
func putBack(prev []fileState) error {
	var stage []staged
	for _, p := range prev {
		if !p.exists {
			continue
		}
		s, err := stageFile(p.path, p.data, p.mode, p.uid, p.gid)
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
			syncDir(filepath.Dir(p.path))
		}
	}
	return errors.Join(errs...)
}

// staged is a fully written, fsynced temporary file waiting to be renamed.
type staged struct{ tmp, path string }

// stageFile writes data to a temporary file in path's directory with mode and
// owner (uid/gid -1: leave as created) set, and fsyncs it.
func stageFile(path string, data []byte, mode os.FileMode, uid, gid int) (staged, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tlsactl-tmp-*")
	if err != nil {
		return staged{}, err
	}
	fail := func(err error) (staged, error) {
		f.Close()
		os.Remove(f.Name())
		return staged{}, fmt.Errorf("writing %s: %w", path, err)
	}
	// Mode first: the temporary file is created 0600, so the key is never
	// readable by others, not even for a moment.
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if uid >= 0 || gid >= 0 {
		fi, err := f.Stat()
		if err != nil {
			return fail(err)
		}
		cu, cg := -1, -1
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			cu, cg = int(sys.Uid), int(sys.Gid)
		}
		if uid == cu {
			uid = -1
		}
		if gid == cg {
			gid = -1
		}
		if uid >= 0 || gid >= 0 {
			if err := f.Chown(uid, gid); err != nil {
				return fail(fmt.Errorf("%w (run as root, or configure an owner/group this user may set)", err))
			}
		}
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return staged{}, fmt.Errorf("writing %s: %w", path, err)
	}
	return staged{tmp: f.Name(), path: path}, nil
}

// commit renames the staged files into place, in order, and fsyncs their
// directories. It returns how many were renamed; on error the rest are
// discarded.
func commit(stage []staged) (int, error) {
	for i, s := range stage {
		if err := os.Rename(s.tmp, s.path); err != nil {
			discard(stage[i:])
			return i, fmt.Errorf("replacing %s: %w", s.path, err)
		}
	}
	done := map[string]bool{}
	for _, s := range stage {
		if dir := filepath.Dir(s.path); !done[dir] {
			done[dir] = true
			syncDir(dir)
		}
	}
	return len(stage), nil
}

func discard(stage []staged) {
	for _, s := range stage {
		os.Remove(s.tmp)
	}
}

// syncDir makes renames in dir durable (best effort).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
