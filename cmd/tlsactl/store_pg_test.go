//go:build !nopostgres

package main

import (
	"testing"
	"time"
)

func TestWithIdleTimeout(t *testing.T) {
	tests := []struct {
		dsn   string
		lease time.Duration
		want  string
	}{
		{"postgres://u@db/x?sslmode=verify-full", 30 * time.Second, "postgres://u@db/x?idle_in_transaction_session_timeout=5000ms&sslmode=verify-full"},
		{"postgres://u@db/x", 2 * time.Second, "postgres://u@db/x?idle_in_transaction_session_timeout=1000ms"},
		{"postgres://u@db/x", time.Second, "postgres://u@db/x?idle_in_transaction_session_timeout=500ms"},
		{"postgres://u@db/x?idle_in_transaction_session_timeout=9s", time.Second, "postgres://u@db/x?idle_in_transaction_session_timeout=9s"},
	}
	for _, tc := range tests {
		if got := withIdleTimeout(tc.dsn, tc.lease); got != tc.want {
			t.Errorf("withIdleTimeout(%q, %s) = %q, want %q", tc.dsn, tc.lease, got, tc.want)
		}
	}
}
