package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresUser is the login role that StartPostgres creates for clients: it
// may log in over TCP with its password (scram-sha-256) and create databases,
// but is no superuser.
const PostgresUser = "tlsactl"

// PostgresOptions configures StartPostgres and LaunchPostgres.
type PostgresOptions struct {
	// TLS turns ssl on with a server certificate (for 127.0.0.1 and
	// localhost) from a freshly generated test CA, whose certificate is
	// written to Postgres.CAFile; TCP clients must then use TLS
	// (sslmode=verify-full works). Without TLS the server accepts only
	// plaintext TCP connections (sslmode=disable).
	TLS bool
}

// Postgres is a running PostgreSQL server (Debian's postgresql package) on
// 127.0.0.1 with a temporary data directory. Clients log in as User with
// Password; the superuser is reachable only through the Unix socket in the
// server's directory and is used by the methods of this type for
// administration (CreateDB, TerminateBackends). A Postgres is safe for
// concurrent use by several tests; Stop, Start and Restart affect every one of
// them.
type Postgres struct {
	Host     string // "127.0.0.1"
	Port     int
	User     string // PostgresUser
	Password string
	CAFile   string // the test CA's certificate (PEM) when TLS, else ""
	Dir      string // the server's directory (data directory, socket, log); removed by Close

	bin      string // directory of postgres, initdb
	cred     *syscall.Credential
	data     string
	opts     PostgresOptions
	mu       sync.Mutex
	p        *proc
	out      *syncBuffer
	dbSerial int
}

// postgresBinDir finds the directory holding initdb and postgres: the newest
// /usr/lib/postgresql/<version>/bin (Debian does not put them on PATH), else
// the directory of initdb on PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, "initdb")); err == nil && !fi.IsDir() {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d, nil
			}
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("testbed: PostgreSQL's initdb and postgres not found in /usr/lib/postgresql/*/bin or on PATH")
}

// RequirePostgres stops the test unless a PostgreSQL server can be started
// here: its binaries exist and, when running as root (initdb and postgres
// refuse root), the Debian user "postgres" exists to run them as. Under
// CI=true a missing piece fails the test, otherwise it is skipped with the
// line that installs it.
func RequirePostgres(tb testing.TB) {
	tb.Helper()
	err := postgresUsable()
	if err == nil {
		return
	}
	Unavailable(tb, fmt.Sprintf("%v; install it with: apt-get install -y --no-install-recommends postgresql", err))
}

func postgresUsable() error {
	if _, err := postgresBinDir(); err != nil {
		return err
	}
	_, err := postgresCredential()
	return err
}

// postgresCredential returns the credential the server runs with: the
// "postgres" user when we are root, else nil (our own user).
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("testbed: running as root, and PostgreSQL refuses root: need the user postgres to run it as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// StartPostgres starts a PostgreSQL server for the test (see LaunchPostgres)
// and stops it, removing its directory, when the test ends. It skips or fails
// the test as RequirePostgres does when PostgreSQL cannot run here.
func StartPostgres(tb testing.TB, o PostgresOptions) *Postgres {
	tb.Helper()
	RequirePostgres(tb)
	p, err := LaunchPostgres(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Error(err)
		}
	})
	return p
}

// LaunchPostgres is StartPostgres without a test, for a server shared by a
// test binary (start it lazily, Close it in TestMain). It runs initdb into a
// new directory under os.TempDir (as user postgres when root), starts
// `postgres -D data` in the foreground on 127.0.0.1 with a free port (retried
// on a lost port race), waits until the client role can log in over TCP and
// returns. The caller must Close it.
func LaunchPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "tlsactl-pg-")
	if err != nil {
		return nil, err
	}
	// The server user must reach its data directory and socket.
	if err := os.Chmod(dir, 0o711); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &Postgres{Host: "127.0.0.1", User: PostgresUser, Dir: dir, bin: bin, cred: cred,
		data: filepath.Join(dir, "data"), opts: o, Password: randomHex(16)}
	if err := p.initdb(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if p.Port, err = freePort(p.Host); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if lastErr = p.start(ctx); lastErr == nil {
			break
		}
		var retry bool
		lastErr, retry = notReady("postgres", lastErr, p.Log())
		if !retry {
			break
		}
	}
	if lastErr != nil {
		os.RemoveAll(dir)
		return nil, lastErr
	}
	if err := p.createRole(ctx); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// initdb creates the cluster, the TLS files and the configuration.
func (p *Postgres) initdb(ctx context.Context) error {
	if err := os.Mkdir(p.data, 0o700); err != nil {
		return err
	}
	if err := p.chown(p.data); err != nil {
		return err
	}
	// The socket directory is the server's to write (lock files); root
	// reaches it anyway, another user through its 0711 mode.
	if err := os.Mkdir(p.sockDir(), 0o711); err != nil {
		return err
	}
	if err := p.chown(p.sockDir()); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "initdb"), "-D", p.data, "-U", "postgres",
		"--auth-local=trust", "--auth-host=reject", "-E", "UTF8", "--locale=C", "--no-sync")
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: initdb %s: %w\n%s", p.data, err, tail(string(out), 4000))
	}
	hba := "local all all trust\n"
	if p.opts.TLS {
		hba += "hostssl all all 127.0.0.1/32 scram-sha-256\n"
	} else {
		hba += "hostnossl all all 127.0.0.1/32 scram-sha-256\n"
	}
	if err := p.writeOwned(filepath.Join(p.data, "pg_hba.conf"), []byte(hba)); err != nil {
		return err
	}
	conf := fmt.Sprintf(`listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
log_min_messages = warning
log_connections = off
`, p.sockDir())
	if p.opts.TLS {
		chain, err := NewChain(ChainOptions{DNSNames: []string{"127.0.0.1", "localhost"}})
		if err != nil {
			return err
		}
		p.CAFile = filepath.Join(p.Dir, "ca.pem")
		if err := os.WriteFile(p.CAFile, chain.Root.PEM, 0o644); err != nil {
			return err
		}
		if err := p.writeOwned(filepath.Join(p.data, "server.crt"), chain.FullChainPEM()); err != nil {
			return err
		}
		if err := p.writeOwned(filepath.Join(p.data, "server.key"), chain.Leaf.KeyPEM); err != nil {
			return err
		}
		conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
	}
	f, err := os.OpenFile(filepath.Join(p.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("\n# testbed\n" + conf); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sockDir is where the server's Unix socket is.
func (p *Postgres) sockDir() string { return filepath.Join(p.Dir, "run") }

// writeOwned writes a 0600 file owned by the server user.
func (p *Postgres) writeOwned(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return p.chown(path)
}

func (p *Postgres) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
}

// start starts the postmaster on p.Port and waits until the superuser can
// connect through the socket and (once the role exists) the client over TCP.
func (p *Postgres) start(ctx context.Context) error {
	p.out = &syncBuffer{}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", p.data, "-p", strconv.Itoa(p.Port))
	cmd.Dir = p.Dir
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Pdeathsig: a test binary killed by its timeout takes the server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGQUIT}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	pr := &proc{cmd: cmd, out: p.out, exited: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		close(pr.exited)
	}()
	p.p = pr
	err := poll(ctx, pr.exited, func(ctx context.Context) error {
		c, err := p.admin(ctx, "postgres")
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		p.stopProc()
		return err
	}
	return nil
}

// admin connects as the superuser through the Unix socket to database db.
func (p *Postgres) admin(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable connect_timeout=5", p.sockDir(), p.Port, db))
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func (p *Postgres) createRole(ctx context.Context) error {
	c, err := p.admin(ctx, "postgres")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	// The password is a random hex string: safe to quote inline (CREATE ROLE
	// takes no parameters).
	if _, err := c.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'", PostgresUser, p.Password)); err != nil {
		return fmt.Errorf("testbed: postgres: create role: %w", err)
	}
	return p.waitClient(ctx)
}

// waitClient polls until the client role logs in over TCP (with TLS when
// configured).
func (p *Postgres) waitClient(ctx context.Context) error {
	return poll(ctx, p.p.exited, func(ctx context.Context) error {
		cfg, err := pgx.ParseConfig(p.DSN("postgres"))
		if err != nil {
			return err
		}
		cfg.Password = p.Password
		cfg.ConnectTimeout = 5 * time.Second
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
}

// DSN returns the URL of database db for the client role, without the
// password: sslmode=verify-full with CAFile as root when TLS, else
// sslmode=disable.
func (p *Postgres) DSN(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(p.User), Host: net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), Path: "/" + db}
	q := url.Values{}
	if p.opts.TLS {
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", p.CAFile)
	} else {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// CreateDB creates a fresh, empty database owned by the client role and
// returns its DSN (see DSN; no password in it: pass it with PasswordFile or
// $PGPASSWORD). The database is not dropped afterwards; it goes with the
// server.
func (p *Postgres) CreateDB(tb testing.TB) (dsn string) {
	tb.Helper()
	p.mu.Lock()
	p.dbSerial++
	name := fmt.Sprintf("t%d_%s", p.dbSerial, randomHex(4))
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := p.admin(ctx, "postgres")
	if err != nil {
		tb.Fatalf("testbed: postgres: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", name, PostgresUser)); err != nil {
		tb.Fatalf("testbed: postgres: create database %s: %v", name, err)
	}
	return p.DSN(name)
}

// PasswordFile writes the client role's password to a new 0600 file in the
// test's temporary directory and returns its path.
func (p *Postgres) PasswordFile(tb testing.TB) string {
	tb.Helper()
	f := filepath.Join(tb.TempDir(), "pgpassword")
	if err := os.WriteFile(f, []byte(p.Password+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return f
}

// Log returns what the server wrote to stdout/stderr since it was last
// started.
func (p *Postgres) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// stopProc shuts the server down (SIGINT: fast shutdown, sessions are
// terminated), killing it after 15 s.
func (p *Postgres) stopProc() error {
	pr := p.p
	if pr == nil {
		return nil
	}
	p.p = nil
	select {
	case <-pr.exited:
		return nil
	default:
	}
	_ = pr.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-pr.exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = pr.cmd.Process.Kill()
	<-pr.exited
	return fmt.Errorf("testbed: postgres pid %d did not stop within 15s; killed", pr.cmd.Process.Pid)
}

// Stop shuts the server down (fast shutdown: every session is terminated) and
// waits until the process has exited. The data directory stays for Start.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stopProc(); err != nil {
		tb.Fatal(err)
	}
}

// Start starts a stopped server again on the same port and waits until the
// client role can log in. Starting a running server does nothing.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.p != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.start(ctx); err != nil {
		err, _ = notReady("postgres", err, p.out.String())
		tb.Fatal(err)
	}
	if err := p.waitClient(ctx); err != nil {
		tb.Fatalf("testbed: postgres restarted but refuses the client: %v", err)
	}
}

// Restart is Stop then Start (like pg_ctl restart -m fast): every session is
// terminated, the server comes back on the same port and Restart returns once
// it accepts the client role's connections.
func (p *Postgres) Restart(tb testing.TB) {
	tb.Helper()
	p.Stop(tb)
	p.Start(tb)
}

// TerminateBackends calls pg_terminate_backend on every session whose
// application_name is applicationName, waiting (up to 5 s each) until they
// are gone, and returns how many it terminated. pgx sends application_name
// from the DSN parameter of that name.
func (p *Postgres) TerminateBackends(tb testing.TB, applicationName string) int {
	tb.Helper()
	var n int
	p.withAdmin(tb, "postgres", fmt.Sprintf("terminate backends of %q", applicationName), func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT pg_terminate_backend(pid, 5000) AS ok FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) t WHERE ok`, applicationName).Scan(&n)
	})
	return n
}

// Sessions lists the sessions open now in database db whose
// application_name starts with prefix, each as "pid@backend start" (a
// session that closed and one opened later never look alike), sorted.
func (p *Postgres) Sessions(tb testing.TB, db, prefix string) []string {
	tb.Helper()
	var list []string
	p.withAdmin(tb, "postgres", fmt.Sprintf("sessions of %q", prefix), func(ctx context.Context, c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT pid::text || '@' || backend_start::text FROM pg_stat_activity
		WHERE datname = $1 AND starts_with(application_name, $2) AND pid <> pg_backend_pid() ORDER BY 1`, db, prefix)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return list
}

// Exec runs sql as the superuser in database db (for tests that need to
// inspect or damage what a client wrote). It fails the test on error.
func (p *Postgres) Exec(tb testing.TB, db, sql string, args ...any) {
	tb.Helper()
	p.withAdmin(tb, db, sql, func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql, args...)
		return err
	})
}

// withAdmin runs f on a superuser connection to database db (30 s at
// most), failing the test with what on error.
func (p *Postgres) withAdmin(tb testing.TB, db, what string, f func(context.Context, *pgx.Conn) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := p.admin(ctx, db)
	if err != nil {
		tb.Fatalf("testbed: postgres: %v", err)
	}
	defer c.Close(context.Background())
	if err := f(ctx, c); err != nil {
		tb.Fatalf("testbed: postgres: %s: %v", what, err)
	}
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() error {
	p.mu.Lock()
	err := p.stopProc()
	p.mu.Unlock()
	if rerr := os.RemoveAll(p.Dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// DBName returns the database name of a DSN that CreateDB returned.
func DBName(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(u.Path, "/")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
