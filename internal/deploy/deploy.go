// Package deploy installs a certificate chain and key on a mail server:
// FileDeployer writes the files the server reads, runs its reload command and
// probes until the new chain is served, putting back the previous files (and
// reloading again) on any failure: those from before the rollover when the
// engine passes them (see FileDeployer.Snapshot), else those it found. It
// implements rollover.Deployer.
//
// # What the server may see while the files are swapped
//
// Both new files are written in full and fsynced under temporary names in
// their target directories first (safefile.Stage); only then are they renamed over the old
// ones, key first, then chain, then the optional leaf-only certificate, back
// to back, and the directories fsynced. A reader sees either the old or the
// new content of each file, never a partial file. Between the two renames
// (microseconds) the key is new and the chain old. Postfix reads key and
// chain when an smtpd process starts (and so after `postfix reload`, which
// makes master replace its children); an smtpd started inside that window
// finds a key that does not match the certificate, logs a TLS warning and
// offers no STARTTLS until it exits. The order of the two renames does not
// change this (either order mismatches), which is why it is kept short.
// For a truly atomic swap, point the server at one file holding key and chain
// (Postfix: smtpd_tls_chain_files = /etc/postfix/combined.pem) and set
// KeyFile and ChainFile to that same path: it is then written as key followed
// by chain, with the key's mode, in a single rename.
//
// # What a deploy refuses, and what it hands on
//
// A deploy usually runs as root, so whoever could swap a symbolic link or a
// directory on the way to a key or chain file could make it overwrite any
// file. It therefore follows a link only into a file owned by root, the
// configured owner or this user, and writes only in directories that such
// a user owns and nobody else may write to (see Config.KeyFile); the files
// are written with internal/safefile through a handle of the directory checked,
// and read with O_NOFOLLOW. The reload command gets a minimal environment
// ([ReloadEnv]), without the provider credentials tlsactl holds. Text from
// outside that ends up in an error (the reload command's output, a probe's
// error, a certificate's name) is bounded to a few hundred bytes, since the
// engine keeps errors in the rollover state and history.
package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tlsactl/tlsactl/rollover"
)

// Defaults for the zero values of Config.
const (
	DefaultKeyMode       os.FileMode = 0o600
	DefaultCertMode      os.FileMode = 0o644
	DefaultReloadTimeout             = 60 * time.Second
	DefaultProbeTimeout              = 2 * time.Minute
	DefaultProbeInterval             = 500 * time.Millisecond
)

// maxOutput bounds the reload command output kept for error messages, and
// maxServerText any other text from outside (a probe's error, a certificate
// name) that reaches an error, and so the rollover state and history.
const (
	maxOutput     = 400
	maxServerText = 300
	maxName       = 64
)

// Sentinel errors, wrapped by the errors Deploy returns.
var (
	// ErrInvalidMaterial: the key or chain was refused before anything was
	// touched.
	ErrInvalidMaterial = errors.New("invalid material")
	// ErrReloadFailed: the reload command failed or timed out; the previous
	// files were restored (see FileDeployer.Deploy for which).
	ErrReloadFailed = errors.New("reload command failed")
	// ErrNotServed: not every address served the new leaf within
	// ProbeTimeout (or the context ended first); the previous files were
	// restored (see FileDeployer.Deploy for which).
	ErrNotServed = errors.New("new certificate not served")
)

// Prober tells which chains a host serves now: one chain (leaf first) per
// address. An address that cannot be probed makes it return an error.
type Prober interface {
	Served(ctx context.Context) ([][]*x509.Certificate, error)
}

// Config says where a server reads its certificate and how to reload it.
type Config struct {
	Host string // MX host name (FQDN or not); for messages
	Port int    // SMTP port probed (for messages; the Prober does the probing)

	// KeyFile and ChainFile are the files the server reads: the private key
	// (PEM) and the full chain (PEM, leaf first, then the CA certificates).
	// Both are required. They may name the same file: it then holds the key
	// followed by the chain and is replaced in a single rename (see the
	// package documentation). A symbolic link at either path is followed
	// (its target is replaced, the link is kept) only into a file owned by
	// root, Owner or this user; and every directory on the way (the one
	// holding the path, each link and the file, and their ancestors) must
	// be owned likewise and not writable by group or others (ancestors may
	// be sticky, as /tmp is). Anything else is refused before a file is
	// touched, with the fix: a deploy runs as root, and whoever could swap
	// a link or a directory could make it overwrite any file.
	KeyFile, ChainFile string
	// CertFile, optional, receives the leaf certificate alone, for servers
	// that want it separately. It is checked like KeyFile.
	CertFile string

	// KeyMode is the mode of the key file (default 0600); CertMode that of
	// the chain and leaf files (default 0644).
	KeyMode, CertMode os.FileMode
	// Owner and Group (names or numeric ids), optional, are set on the new
	// files. When empty, a file keeps the owner (group) of the file it
	// replaces; a new file, and one reached through a symbolic link (whose
	// target must not pass its owner on), gets the process's.
	Owner, Group string

	// Reload is the argv of the reload command, run without a shell, e.g.
	// ["postfix", "-c", "/etc/postfix", "reload"]. Empty: no command is run
	// (for servers that notice new files by themselves). It runs with a
	// minimal environment (see ReloadEnv): no provider credentials.
	Reload        []string
	ReloadTimeout time.Duration // default 60s

	// ProbeTimeout bounds the wait for every address to serve the new leaf
	// (default 2m); the Prober is asked every ProbeInterval (default 500ms).
	ProbeTimeout  time.Duration
	ProbeInterval time.Duration
	Prober        Prober // required

	// Now is the clock for the validity check; time.Now when nil.
	Now func() time.Time
}

// FileDeployer deploys to files on the local machine. It implements
// rollover.Deployer. Deploys through one FileDeployer are serialised.
type FileDeployer struct {
	cfg      Config
	uid, gid int // configured owner, -1 when not configured
	mu       sync.Mutex
}

var _ rollover.Deployer = (*FileDeployer)(nil)

// New checks cfg, fills in the defaults and returns the deployer.
func New(cfg Config) (*FileDeployer, error) {
	if cfg.KeyFile == "" || cfg.ChainFile == "" {
		return nil, fmt.Errorf("deploy: key and chain file paths are required: set both (they may be the same file)")
	}
	if cfg.CertFile != "" && (cfg.CertFile == cfg.KeyFile || cfg.CertFile == cfg.ChainFile) {
		return nil, fmt.Errorf("deploy: the leaf-only certificate file %s is also the key or chain file: give it its own path or leave it empty", cfg.CertFile)
	}
	if cfg.Prober == nil {
		return nil, fmt.Errorf("deploy: no prober configured: set Config.Prober (e.g. a ResolverProber for the host)")
	}
	if len(cfg.Reload) > 0 && cfg.Reload[0] == "" {
		return nil, fmt.Errorf("deploy: the reload command has an empty program name: give its argv, e.g. [\"postfix\", \"reload\"]")
	}
	if cfg.KeyMode == 0 {
		cfg.KeyMode = DefaultKeyMode
	}
	if cfg.CertMode == 0 {
		cfg.CertMode = DefaultCertMode
	}
	if cfg.KeyMode&^os.ModePerm != 0 || cfg.CertMode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("deploy: file modes %v/%v have more than permission bits: use plain modes such as 0600 and 0644", cfg.KeyMode, cfg.CertMode)
	}
	if cfg.KeyMode&0o007 != 0 {
		return nil, fmt.Errorf("deploy: key mode %v gives other users access to the private key: use 0600 or 0640", cfg.KeyMode)
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = DefaultReloadTimeout
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &FileDeployer{cfg: cfg, uid: -1, gid: -1}
	var err error
	if cfg.Owner != "" {
		if d.uid, err = lookupID(cfg.Owner, true); err != nil {
			return nil, err
		}
	}
	if cfg.Group != "" {
		if d.gid, err = lookupID(cfg.Group, false); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func lookupID(name string, isUser bool) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	if isUser {
		u, err := user.Lookup(name)
		if err != nil {
			return -1, fmt.Errorf("deploy: owner %q: %v: give an existing user name or a numeric uid", name, err)
		}
		return strconv.Atoi(u.Uid)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("deploy: group %q: %v: give an existing group name or a numeric gid", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// Config returns the configuration with the defaults filled in.
func (d *FileDeployer) Config() Config { return d.cfg }

// Served returns the chain served at each address now (the Prober's answer).
func (d *FileDeployer) Served(ctx context.Context) ([][]*x509.Certificate, error) {
	return d.cfg.Prober.Served(ctx)
}

// Deploy validates m, installs it, runs the reload command and waits until
// every address serves m's leaf. Invalid material is refused (ErrInvalidMaterial)
// before any file is touched, as is a restore that cannot be written (see
// below). If the reload command fails (ErrReloadFailed) or the new leaf is not
// served in time (ErrNotServed, also when ctx ends), the files are put back
// and the reload command is run again under a fresh ReloadTimeout, even if ctx
// was cancelled; the error says what was put back.
//
// What is put back: restore, when restore.ChainPEM is not empty — the
// material from before the rollover, as Snapshot read it and the engine kept
// it: its key and chain bytes exactly, and the leaf of its chain in CertFile
// when one is configured, with the configured modes and owner (else the
// owner of the file found), written atomically like a deploy. This is what a
// deploy resumed after a crash must do: the files may already hold m (the
// crash came between the rename and the reload), and putting back what this
// call found would make m stick. With an empty restore (the first deploy,
// or a caller without a snapshot), the files as this call found them are put
// back, and files that did not exist are removed. The *.tlsactl-prev backups
// written before the files are replaced hold the same material.
//
// A failure writing the new files before any was replaced leaves the files
// as they were, unless restore is given and they do not hold it: then
// restore is written and the server reloaded, as for a failed reload.
func (d *FileDeployer) Deploy(ctx context.Context, m rollover.Material, restore rollover.Material) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	mat, err := Validate(m, d.cfg.Now())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deploy: not started: %w", err)
	}
	files, err := d.plan(mat)
	if err != nil {
		return err
	}
	prev, err := snapshot(files)
	if err != nil {
		return fmt.Errorf("deploy: reading the current files (nothing was changed): %w", err)
	}
	// back is what a failure puts back, what describes it.
	back, what := prev, "the previous certificate files (as this deploy found them) were restored"
	if len(restore.ChainPEM) > 0 {
		if back, err = d.restoreStates(restore, prev); err != nil {
			return err
		}
		what = "the certificate files from before the rollover were restored" + restoredLeaf(restore.ChainPEM)
	}
	// unchanged reports a failure that replaced no file: nothing to undo
	// when the files hold back already, else back is written.
	unchanged := func(cause error) error {
		if sameContent(prev, back) {
			return fmt.Errorf("deploy: %w (the certificate files were not changed)", cause)
		}
		return d.rollback(ctx, back, what, cause)
	}
	if err := d.backup(back); err != nil {
		return unchanged(fmt.Errorf("backing up the current files: %w", err))
	}
	if renamed, err := d.install(files, prev); err != nil {
		if !renamed {
			return unchanged(fmt.Errorf("writing the new files: %w", err))
		}
		if len(restore.ChainPEM) > 0 {
			// The files found need not be what the server loaded last
			// (a crash): make it load what is put back.
			return d.rollback(ctx, back, what, fmt.Errorf("writing the new files: %w", err))
		}
		if rerr := d.putBack(back); rerr != nil {
			return fmt.Errorf("deploy: writing the new files: %w; restoring the previous files also failed: %v: put back the *%s copies by hand", err, rerr, backupSuffix)
		}
		return fmt.Errorf("deploy: writing the new files: %w; %s, nothing was reloaded", err, what)
	}
	if err := d.reload(ctx); err != nil {
		return d.rollback(ctx, back, what, fmt.Errorf("%w: %q: %w", ErrReloadFailed, strings.Join(d.cfg.Reload, " "), err))
	}
	if err := d.waitServed(ctx, mat.Leaf); err != nil {
		return d.rollback(ctx, back, what, err)
	}
	return nil
}

// restoredLeaf names the leaf of chainPEM for messages: " (leaf …)", or ""
// when it does not parse.
func restoredLeaf(chainPEM []byte) string {
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return ""
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return ""
			}
			return " (leaf " + describe(c) + ")"
		}
	}
}

// rollback writes back (the material to put back), reloads again (best
// effort, under a fresh bounded context) and returns cause with the outcome;
// what says what was put back.
func (d *FileDeployer) rollback(ctx context.Context, back []fileState, what string, cause error) error {
	if lost := context.Cause(ctx); errors.Is(lost, rollover.ErrLeaseLost) {
		// The runner's lease on the host ended (a shared state): another
		// runner may own the host now and have deployed the same new
		// files. Putting the old ones back would undo its deploy; the
		// runner holding the lease resumes or restores it.
		return fmt.Errorf("deploy: %w; the files are left as they are, for the runner that holds the host now: %w", cause, lost)
	}
	if err := d.putBack(back); err != nil {
		return fmt.Errorf("deploy: %w; RESTORING the certificate files FAILED: %v: the server may read the new files; put back the *%s copies by hand and reload", cause, err, backupSuffix)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ReloadTimeout)
	defer cancel()
	if err := d.reload(rctx); err != nil {
		return fmt.Errorf("deploy: %w; %s but reloading them failed too (%v): reload the server by hand", cause, what, err)
	}
	return fmt.Errorf("deploy: %w; %s and the server reloaded", cause, what)
}

// reload runs the reload command under ReloadTimeout, with ReloadEnv's
// environment. The error does not name the command; callers do.
func (d *FileDeployer) reload(ctx context.Context) error {
	argv := d.cfg.Reload
	if len(argv) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReloadTimeout)
	defer cancel()
	out := &boundedBuffer{max: maxOutput}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = ReloadEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = out, out
	// A child that keeps the output pipe open must not hold us past the
	// timeout.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var output string
	if o := out.String(); o != "" {
		output = ": output: " + o
	}
	if ctx.Err() != nil {
		how := "interrupted"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			how = fmt.Sprintf("timed out (limit %s)", d.cfg.ReloadTimeout)
		}
		return fmt.Errorf("%s: %v (%w)%s", how, err, context.Cause(ctx), output)
	}
	return fmt.Errorf("%w%s", err, output)
}

// waitServed polls the prober until every address serves leaf.
func (d *FileDeployer) waitServed(ctx context.Context, leaf *x509.Certificate) error {
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
	defer cancel()
	// A full interval from the end of one probe to the start of the next
	// (a ticker would fire at once after a slow probe).
	wait := time.NewTimer(d.cfg.ProbeInterval)
	defer wait.Stop()
	last := "no probe finished"
	for {
		chains, err := d.cfg.Prober.Served(pctx)
		if err == nil {
			var ok bool
			if ok, last = servesLeaf(chains, leaf); ok {
				return nil
			}
		} else if pctx.Err() == nil {
			// A probe cut short by the deadline says nothing new: keep
			// the previous observation for the message.
			last = "probe failed: " + clip(err.Error(), maxServerText)
		}
		wait.Reset(d.cfg.ProbeInterval)
		select {
		case <-pctx.Done():
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("%w: stopped after %s: %w (last: %s)", ErrNotServed, time.Since(start).Round(time.Millisecond), cerr, last)
			}
			return fmt.Errorf("%w: %s did not serve the new leaf (%s) within %s (last: %s): check that the reload command makes the server read %s",
				ErrNotServed, d.target(), describe(leaf), d.cfg.ProbeTimeout, last, d.cfg.ChainFile)
		case <-wait.C:
		}
	}
}

func (d *FileDeployer) target() string {
	switch {
	case d.cfg.Host != "" && d.cfg.Port != 0:
		return fmt.Sprintf("%s port %d", strings.TrimSuffix(d.cfg.Host, "."), d.cfg.Port)
	case d.cfg.Host != "":
		return strings.TrimSuffix(d.cfg.Host, ".")
	}
	return "the server"
}

// servesLeaf reports whether every chain starts with leaf, and otherwise
// what was seen.
func servesLeaf(chains [][]*x509.Certificate, leaf *x509.Certificate) (bool, string) {
	if len(chains) == 0 {
		return false, "no address probed"
	}
	old := 0
	var seen string
	for _, c := range chains {
		if len(c) == 0 {
			old++
			seen = "an empty chain"
			continue
		}
		if !bytes.Equal(c[0].Raw, leaf.Raw) {
			old++
			seen = describe(c[0])
		}
	}
	if old == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("%d of %d addresses serve another leaf, e.g. %s", old, len(chains), seen)
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	max       int
	b         bytes.Buffer
	truncated bool
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := w.max - w.b.Len(); room < len(p) {
		w.truncated = true
		if room > 0 {
			w.b.Write(p[:room])
		}
		return len(p), nil
	}
	return w.b.Write(p)
}

// String returns the output on one line.
func (w *boundedBuffer) String() string {
	var lines []string
	for _, l := range strings.Split(w.b.String(), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	s := strings.Join(lines, " | ")
	if w.truncated {
		s += " …"
	}
	return s
}

// describe names a certificate for messages; the name is the server's
// text, so it is bounded.
func describe(c *x509.Certificate) string {
	name := c.Subject.CommonName
	if name == "" && len(c.DNSNames) > 0 {
		name = c.DNSNames[0]
	}
	if name == "" {
		name = c.Subject.String()
	}
	serial := fmt.Sprintf("%x", c.SerialNumber)
	return fmt.Sprintf("%q serial %s, expires %s", clip(name, maxName), clip(serial, maxName), c.NotAfter.UTC().Format("2006-01-02"))
}

// clip bounds s to about max bytes (cut at a rune boundary, "…" appended).
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for j := 0; j < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(s[i]); j++ {
		i--
	}
	return s[:i] + "…"
}

// defaultPath is the reload command's PATH when tlsactl has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ReloadEnv returns the environment the reload command runs with, taken from
// environ (os.Environ()): PATH (a default when unset), HOME, LANG, LANGUAGE
// and LC_*, nothing else. tlsactl's own environment holds DNS provider
// credentials (AWS_*, OVH_*, DESEC_TOKEN, TSIG keys, …) that a reload command
// has no business seeing and could log.
func ReloadEnv(environ []string) []string {
	var out []string
	havePath := false
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch {
		case k == "PATH", k == "HOME", k == "LANG", k == "LANGUAGE", strings.HasPrefix(k, "LC_"):
			out = append(out, kv)
			havePath = havePath || k == "PATH"
		}
	}
	if !havePath {
		out = append(out, "PATH="+defaultPath)
	}
	return out
}

// absPath makes p absolute (for messages and backups); errors keep p.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
