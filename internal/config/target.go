package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Deploy targets. Hosts whose [host.deploy] sections name the same files are
// one deploy target: deploying to one changes what the others serve (the
// same Postfix on ports 25 and 587, several MX names on one machine, a
// certificate file shared through a symbolic link). Parse accepts sharing
// only when it is complete: the same key_file, chain_file and cert_file (or
// none on both), the same reload command and the same modes, owner and
// group, so that a deploy through either host writes the same files in the
// same way. Anything partial is refused: a deploy through one host would
// leave the other with a key that does not match its chain.
//
// Two paths name the same file when their cleaned absolute forms are equal,
// or when they lead to the same place after following symbolic links (of
// the file when it exists, else of its directory). Relative paths are
// taken from the working directory, as the deployer does.

// deployFile is one file of a host's deploy section.
type deployFile struct {
	role string   // "key_file", "chain_file" or "cert_file"
	path string   // absolute and cleaned, as configured
	ids  []string // path, and where it leads with symbolic links followed
}

// deployFiles returns the files of d that are set, key first.
func deployFiles(d Deploy) []deployFile {
	var out []deployFile
	for _, f := range []struct{ role, path string }{
		{"key_file", d.KeyFile}, {"chain_file", d.ChainFile}, {"cert_file", d.CertFile},
	} {
		if f.path == "" {
			continue
		}
		abs, err := filepath.Abs(f.path)
		if err != nil {
			abs = filepath.Clean(f.path)
		}
		df := deployFile{role: f.role, path: abs, ids: []string{abs}}
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			df.ids = append(df.ids, r)
		} else if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			df.ids = append(df.ids, filepath.Join(dir, filepath.Base(abs)))
		}
		out = append(out, df)
	}
	return out
}

// same reports whether a and b name the same file.
func (a deployFile) same(b deployFile) bool {
	for _, x := range a.ids {
		if slices.Contains(b.ids, x) {
			return true
		}
	}
	return false
}

// byRole returns the file of fs with role, if set.
func byRole(fs []deployFile, role string) (deployFile, bool) {
	for _, f := range fs {
		if f.role == role {
			return f, true
		}
	}
	return deployFile{}, false
}

// sharedFile returns the first file a and b share, preferring one they
// share in the same role.
func sharedFile(a, b []deployFile) (fa, fb deployFile, ok bool) {
	for _, x := range a {
		if y, ok := byRole(b, x.role); ok && x.same(y) {
			return x, y, true
		}
	}
	for _, x := range a {
		for _, y := range b {
			if x.same(y) {
				return x, y, true
			}
		}
	}
	return deployFile{}, deployFile{}, false
}

// checkTargets refuses hosts that share some deploy files but not all of
// them, or not the way they are written and reloaded.
func checkTargets(hosts []Host, source string) error {
	files := make([][]deployFile, len(hosts))
	for i := range hosts {
		if hosts[i].Deploy.Configured() {
			files[i] = deployFiles(hosts[i].Deploy)
		}
	}
	for i := range hosts {
		for j := i + 1; j < len(hosts); j++ {
			fa, fb, ok := sharedFile(files[i], files[j])
			if !ok {
				continue
			}
			if why := mismatch(&hosts[i], &hosts[j], files[i], files[j], fa, fb); why != "" {
				a, b := hostLabels(&hosts[i], &hosts[j])
				shared := fa.path
				if fb.path != fa.path {
					shared += " (" + b + ": " + fb.path + ", the same file)"
				}
				return fmt.Errorf("%w: %s: [[host]] %s and %s share %s %s", ErrConfig, source, a, b, shared, why)
			}
		}
	}
	return nil
}

const (
	fixFiles = "hosts that share certificate files must share all of them (one deploy target), or use separate files"
	fixSame  = "hosts that share certificate files are one deploy target and must write and reload them the same way, or use separate files"
)

// mismatch says how hosts a and b, which share fa (of a) and fb (of b),
// differ, or returns "" when they are one deploy target.
func mismatch(a, b *Host, af, bf []deployFile, fa, fb deployFile) string {
	if fa.role != fb.role {
		return fmt.Sprintf("as %s of %s and %s of %s: %s", fa.role, name(a), fb.role, name(b), fixFiles)
	}
	for _, role := range []string{"key_file", "chain_file", "cert_file"} {
		x, okx := byRole(af, role)
		y, oky := byRole(bf, role)
		if okx != oky || (okx && !x.same(y)) {
			return fmt.Sprintf("as %s but not %s: %s", fa.role, role, fixFiles)
		}
	}
	da, db := a.Deploy, b.Deploy
	if !slices.Equal(da.Reload, db.Reload) {
		return fmt.Sprintf("but not the reload command (%q and %q): %s", da.Reload, db.Reload, fixSame)
	}
	for _, m := range []struct{ key, x, y, def string }{
		{"key_mode", da.KeyMode, db.KeyMode, "0600"},
		{"cert_mode", da.CertMode, db.CertMode, "0644"},
	} {
		if mode(m.x, m.def) != mode(m.y, m.def) {
			return fmt.Sprintf("but not the %s (%q and %q): %s", m.key, orDefault(m.x, m.def), orDefault(m.y, m.def), fixSame)
		}
	}
	if da.Owner != db.Owner || da.Group != db.Group {
		return fmt.Sprintf("but not the owner and group (%s and %s): %s", ownership(da), ownership(db), fixSame)
	}
	return ""
}

// mode parses an octal mode as validated by Parse ("" is def).
func mode(s, def string) uint64 {
	v, err := strconv.ParseUint(orDefault(s, def), 8, 32)
	if err != nil {
		return 1 << 40 // never equal to a valid mode; Parse refused it already
	}
	return v
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ownership names d's owner and group for messages.
func ownership(d Deploy) string {
	if d.Owner == "" && d.Group == "" {
		return "none set"
	}
	return fmt.Sprintf("%q:%q", d.Owner, d.Group)
}

func name(h *Host) string { return strings.TrimSuffix(h.Name, ".") }

// hostLabels names two hosts for a message, with their ports when the names
// are the same.
func hostLabels(a, b *Host) (string, string) {
	if a.Name == b.Name {
		return fmt.Sprintf("%s port %d", name(a), a.Port), fmt.Sprintf("%s port %d", name(b), b.Port)
	}
	return name(a), name(b)
}

// SharedTarget returns the other hosts that share h's deploy files and so
// form one deploy target with it (deploying to h changes what they serve),
// in configuration order; none when h has no deploy section or shares no
// file. h is one of c.Hosts (or a copy: the host with its name and port is
// left out). The files are compared as Parse compares them, following
// symbolic links as they are now.
func (c *Config) SharedTarget(h *Host) []*Host {
	if h == nil || !h.Deploy.Configured() {
		return nil
	}
	mine := deployFiles(h.Deploy)
	var out []*Host
	for i := range c.Hosts {
		o := &c.Hosts[i]
		if o == h || (o.Name == h.Name && o.Port == h.Port) || !o.Deploy.Configured() {
			continue
		}
		if _, _, ok := sharedFile(mine, deployFiles(o.Deploy)); ok {
			out = append(out, o)
		}
	}
	return out
}
