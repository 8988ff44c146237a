package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsactl/tlsactl/rollover"
)

// migrationStatuses are every status a migration can have, for the
// tlsactl_migration_status metric (1 for the current one, 0 for the
// others, so a query never sees a series vanish on a change).
var migrationStatuses = []rollover.MigrationStatus{
	rollover.MigrationActive, rollover.MigrationPaused, rollover.MigrationHalted,
	rollover.MigrationAborted, rollover.MigrationDone,
}

// migrationRegistry returns a registry holding the metrics of ms at now:
//
//	tlsactl_migration_hosts{migration,phase}                hosts per phase (every phase, zeros included)
//	tlsactl_migration_failures{migration}                   hosts counted as failed
//	tlsactl_migration_max_failures{migration}               the halt threshold
//	tlsactl_migration_deadline_seconds{migration}           seconds to the deadline, negative after (absent: none)
//	tlsactl_migration_status{migration,status}              1 for the current status, 0 for the others
//	tlsactl_migration_next_action_timestamp_seconds{migration}  the earliest next action (absent: none pending)
func migrationRegistry(ms []*rollover.Migration, now time.Time) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	hosts := gauge("tlsactl_migration_hosts", "Hosts of a fleet CA migration in each phase.", "migration", "phase")
	failures := gauge("tlsactl_migration_failures", "Hosts of a fleet CA migration that failed (counted towards max_failures).", "migration")
	maxFailures := gauge("tlsactl_migration_max_failures", "Failed hosts at which a fleet CA migration halts.", "migration")
	deadline := gauge("tlsactl_migration_deadline_seconds", "Seconds until the migration's deadline; negative once it has passed.", "migration")
	status := gauge("tlsactl_migration_status", "The migration's status: 1 for the current one, 0 for the others.", "migration", "status")
	next := gauge("tlsactl_migration_next_action_timestamp_seconds", "Unix time of the migration's earliest next action.", "migration")
	for _, m := range ms {
		name := m.Spec.Name
		counts := m.Counts()
		for _, ph := range rollover.Phases {
			hosts.WithLabelValues(name, string(ph)).Set(float64(counts[ph]))
		}
		failures.WithLabelValues(name).Set(float64(m.Failures))
		maxFailures.WithLabelValues(name).Set(float64(m.Spec.MaxFailures))
		if d := m.Spec.Deadline; !d.IsZero() {
			deadline.WithLabelValues(name).Set(d.Sub(now).Seconds())
		}
		for _, s := range migrationStatuses {
			v := 0.0
			if m.Status == s {
				v = 1
			}
			status.WithLabelValues(name, string(s)).Set(v)
		}
		if nx := m.Next(); !nx.IsZero() {
			next.WithLabelValues(name).Set(float64(nx.UnixMilli()) / 1000)
		}
	}
	return reg
}

// writeMigrationMetrics writes the metrics of ms to path in the Prometheus
// text format, atomically (a temporary file renamed over it, whose name
// does not end in .prom, so the textfile collector never reads half a file).
func writeMigrationMetrics(path string, ms []*rollover.Migration, now time.Time) error {
	return prometheus.WriteToTextfile(path, migrationRegistry(ms, now))
}
