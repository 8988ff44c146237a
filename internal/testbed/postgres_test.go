package testbed

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgres starts a server with and without TLS and checks every
// operation the stores' tests rely on: a fresh database per call, password
// login (and refusal without it), TLS with verify-full, terminating one
// application's sessions, restart on the same port.
func TestPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			pg := StartPostgres(t, PostgresOptions{TLS: tc.tls})
			t.Logf("initdb + start: %v", time.Since(start).Round(time.Millisecond))
			dsn := pg.CreateDB(t)
			if strings.Contains(dsn, pg.Password) {
				t.Fatalf("DSN %s contains the password", dsn)
			}
			if dsn2 := pg.CreateDB(t); DBName(dsn2) == DBName(dsn) {
				t.Fatalf("CreateDB twice gave %s", DBName(dsn))
			}
			pwf := pg.PasswordFile(t)
			if fi, err := os.Stat(pwf); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("password file %s: %v %v", pwf, fi.Mode(), err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			connect := func(password, app string) (*pgx.Conn, error) {
				cfg, err := pgx.ParseConfig(dsn)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Password = password
				cfg.RuntimeParams["application_name"] = app
				return pgx.ConnectConfig(ctx, cfg)
			}
			if c, err := connect("wrong", "x"); err == nil {
				c.Close(ctx)
				t.Fatal("login with a wrong password succeeded")
			}
			a1, err := connect(pg.Password, "victim")
			if err != nil {
				t.Fatal(err)
			}
			defer a1.Close(ctx)
			a2, err := connect(pg.Password, "victim")
			if err != nil {
				t.Fatal(err)
			}
			defer a2.Close(ctx)
			other, err := connect(pg.Password, "bystander")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(ctx)
			var ssl bool
			if err := other.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
				t.Fatal(err)
			}
			if ssl != tc.tls {
				t.Fatalf("connection ssl = %v, want %v", ssl, tc.tls)
			}
			if _, err := other.Exec(ctx, "CREATE TABLE x (v int)"); err != nil {
				t.Fatalf("the client role cannot create a table in its database: %v", err)
			}
			if n := pg.TerminateBackends(t, "victim"); n != 2 {
				t.Fatalf("TerminateBackends = %d, want 2", n)
			}
			if err := a1.Ping(ctx); err == nil {
				t.Fatal("a terminated session still answers")
			}
			if err := other.Ping(ctx); err != nil {
				t.Fatalf("the bystander session was hit: %v", err)
			}
			port := pg.Port
			start = time.Now()
			pg.Restart(t)
			t.Logf("restart: %v", time.Since(start).Round(time.Millisecond))
			if pg.Port != port {
				t.Fatalf("port changed %d -> %d", port, pg.Port)
			}
			if err := other.Ping(ctx); err == nil {
				t.Fatal("a session survived the restart")
			}
			c, err := connect(pg.Password, "after")
			if err != nil {
				t.Fatalf("after restart: %v", err)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM x").Scan(&n); err != nil {
				t.Fatalf("table lost across restart: %v", err)
			}
			c.Close(ctx)
			pg.Stop(t)
			if c, err := connect(pg.Password, "stopped"); err == nil || errors.Is(err, context.DeadlineExceeded) {
				if c != nil {
					c.Close(ctx)
				}
				t.Fatalf("connect to a stopped server: %v", err)
			}
			pg.Start(t)
			if c, err := connect(pg.Password, "started"); err != nil {
				t.Fatal(err)
			} else {
				c.Close(ctx)
			}
		})
	}
}
