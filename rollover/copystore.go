package rollover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
)

// Enumerator lists everything a store holds, for CopyStore. *FileStore and
// *PGStore implement it.
type Enumerator interface {
	ListLedgers() ([]string, error)             // TLSA owner names with a ledger, sorted
	ListMaterial(host string) ([]string, error) // staged material names of host, sorted
}

// CopyReport counts the documents of a store (Count) or what CopyStore
// copied.
type CopyReport struct {
	States     int `json:"states"`
	Materials  int `json:"materials"`
	Ledgers    int `json:"ledgers"`
	Migrations int `json:"migrations"`
}

// inventory is every name a store holds, as CopyStore copies it.
type inventory struct {
	hosts    []string            // with a state
	owners   []string            // with a ledger
	migs     []string            // migrations
	matHosts []string            // whose material is copied: hosts with a state and the migrations' hosts
	mats     map[string][]string // material names by host
}

// takeInventory lists what src holds (src must be an Enumerator).
func takeInventory(src Store) (*inventory, error) {
	en, ok := src.(Enumerator)
	if !ok {
		return nil, fmt.Errorf("rollover: copy: the source store (%T) cannot list its contents", src)
	}
	inv := &inventory{mats: map[string][]string{}}
	var err error
	if inv.hosts, err = src.List(); err != nil {
		return nil, err
	}
	if inv.owners, err = en.ListLedgers(); err != nil {
		return nil, err
	}
	inv.matHosts = slices.Clone(inv.hosts)
	if srcM, ok := src.(MigrationStore); ok {
		if inv.migs, err = srcM.ListMigrations(); err != nil {
			return nil, err
		}
		for _, name := range inv.migs {
			m, err := srcM.LoadMigration(name)
			if err != nil {
				return nil, err
			}
			for _, h := range m.Hosts {
				if n, err := normalizeHost(h.Host); err == nil {
					inv.matHosts = append(inv.matHosts, n)
				}
			}
		}
	}
	slices.Sort(inv.matHosts)
	inv.matHosts = slices.Compact(inv.matHosts)
	for _, h := range inv.matHosts {
		if inv.mats[h], err = en.ListMaterial(h); err != nil {
			return nil, err
		}
	}
	return inv, nil
}

// count is what CopyStore would copy.
func (inv *inventory) count() CopyReport {
	r := CopyReport{States: len(inv.hosts), Ledgers: len(inv.owners), Migrations: len(inv.migs)}
	for _, names := range inv.mats {
		r.Materials += len(names)
	}
	return r
}

// Count counts what src holds as CopyStore copies it: states, staged
// material (of the hosts with a state and of the migrations' hosts),
// ledgers and migrations. src must be an Enumerator.
func Count(src Store) (CopyReport, error) {
	inv, err := takeInventory(src)
	if err != nil {
		return CopyReport{}, err
	}
	return inv.count(), nil
}

// CopyStore copies every state, staged material, ledger and migration of src into dst (dst must be empty
// of those names, else an error naming the first conflict, nothing written for it), then reads everything back from dst
// and compares it with src; a difference is an error naming it.
//
// src must be an Enumerator; migrations are copied when both stores are
// MigrationStores. Material is copied for the hosts with state and the hosts
// of migrations. Every conflict is looked for before anything is written,
// so a conflict writes nothing at all. Each host's state and material are
// written under dst's lock of the host, each migration under its lock
// (a PGStore fences them by its leases). Documents are compared as the
// JSON a FileStore writes, so a copy between a FileStore and a PGStore is
// byte-for-byte. CopyStore does not lock src: stop the runners first.
func CopyStore(ctx context.Context, dst, src Store) (CopyReport, error) {
	var rep CopyReport
	inv, err := takeInventory(src)
	if err != nil {
		return rep, err
	}
	hosts, owners, migs, matHosts, mats := inv.hosts, inv.owners, inv.migs, inv.matHosts, inv.mats
	srcM, _ := src.(MigrationStore)
	dstM, _ := dst.(MigrationStore)
	if len(migs) > 0 && dstM == nil {
		return rep, fmt.Errorf("rollover: copy: the destination store (%T) cannot hold migrations", dst)
	}

	// Conflicts first: nothing is written when dst holds any of the names.
	for _, h := range hosts {
		if _, err := dst.Load(h); err == nil {
			return rep, fmt.Errorf("rollover: copy: the destination already has a state for %s: copy into an empty store", h)
		} else if !errors.Is(err, ErrNoRollover) {
			return rep, err
		}
	}
	for _, h := range matHosts {
		for _, n := range mats[h] {
			if _, err := dst.GetMaterial(h, n); err == nil {
				return rep, fmt.Errorf("rollover: copy: the destination already has staged material %s/%s: copy into an empty store", h, n)
			} else if !errors.Is(err, ErrNoMaterial) {
				return rep, err
			}
		}
	}
	for _, o := range owners {
		l, err := dst.LoadLedger(o)
		if err != nil {
			return rep, err
		}
		if len(l.Versions) > 0 {
			return rep, fmt.Errorf("rollover: copy: the destination already has a ledger for %s: copy into an empty store", o)
		}
	}
	for _, name := range migs {
		if _, err := dstM.LoadMigration(name); err == nil {
			return rep, fmt.Errorf("rollover: copy: the destination already has migration %s: copy into an empty store", name)
		} else if !errors.Is(err, ErrNoMigration) {
			return rep, err
		}
	}

	// Write.
	for _, h := range matHosts {
		if err := copyHost(ctx, dst, src, h, slices.Contains(hosts, h), mats[h], &rep); err != nil {
			return rep, err
		}
	}
	for _, o := range owners {
		l, err := src.LoadLedger(o)
		if err != nil {
			return rep, err
		}
		if _, err := dst.UpdateLedger(ctx, o, func(d *Ledger) error { *d = *l.Copy(); return nil }); err != nil {
			return rep, fmt.Errorf("rollover: copy ledger of %s: %w", o, err)
		}
		rep.Ledgers++
	}
	for _, name := range migs {
		m, err := srcM.LoadMigration(name)
		if err != nil {
			return rep, err
		}
		unlock, err := dstM.LockMigration(ctx, name)
		if err != nil {
			return rep, err
		}
		err = dstM.SaveMigration(m)
		_ = unlock()
		if err != nil {
			return rep, fmt.Errorf("rollover: copy migration %s: %w", name, err)
		}
		rep.Migrations++
	}
	return rep, verifyCopy(dst, src, hosts, matHosts, mats, owners, migs)
}

// copyHost writes host h's state (when it has one) and material under dst's
// lock of the host.
func copyHost(ctx context.Context, dst, src Store, h string, state bool, names []string, rep *CopyReport) error {
	unlock, err := dst.Lock(ctx, h)
	if err != nil {
		return err
	}
	defer unlock()
	for _, n := range names {
		m, err := src.GetMaterial(h, n)
		if err != nil {
			return err
		}
		if err := dst.PutMaterial(h, n, m); err != nil {
			return fmt.Errorf("rollover: copy material %s/%s: %w", h, n, err)
		}
		rep.Materials++
	}
	if !state {
		return nil
	}
	st, err := src.Load(h)
	if err != nil {
		return err
	}
	if err := dst.Save(st); err != nil {
		return fmt.Errorf("rollover: copy state of %s: %w", h, err)
	}
	rep.States++
	return nil
}

// verifyCopy reads everything back from dst and compares it with src.
func verifyCopy(dst, src Store, hosts, matHosts []string, mats map[string][]string, owners, migs []string) error {
	for _, h := range hosts {
		if err := readBack("the state of "+h, src, dst, Store.Load, h, encodeState); err != nil {
			return err
		}
	}
	for _, h := range matHosts {
		for _, n := range mats[h] {
			get := func(s Store, h string) (Material, error) { return s.GetMaterial(h, n) }
			enc := func(m Material) ([]byte, error) {
				return append(append(append([]byte(nil), m.ChainPEM...), 0), m.KeyPEM...), nil
			} // PEM holds no NUL
			if err := readBack("material "+h+"/"+n, src, dst, get, h, enc); err != nil {
				return err
			}
		}
	}
	for _, o := range owners {
		enc := func(l *Ledger) ([]byte, error) { return encodeLedger(l, o) }
		if err := readBack("the ledger of "+o, src, dst, Store.LoadLedger, o, enc); err != nil {
			return err
		}
	}
	load := func(s Store, name string) (*Migration, error) { return s.(MigrationStore).LoadMigration(name) }
	for _, name := range migs {
		if err := readBack("migration "+name, src, dst, load, name, encodeMigration); err != nil {
			return err
		}
	}
	return nil
}

// readBack loads key from src and dst and compares their encodings.
func readBack[T any](what string, src, dst Store, load func(Store, string) (T, error), key string, enc func(T) ([]byte, error)) error {
	a, err := load(src, key)
	if err != nil {
		return err
	}
	b, err := load(dst, key)
	if err != nil {
		return fmt.Errorf("rollover: copy: reading back %s: %w", what, err)
	}
	ja, err := enc(a)
	if err != nil {
		return err
	}
	jb, err := enc(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(ja, jb) {
		return fmt.Errorf("rollover: copy: %s read back from the destination differs from the source", what)
	}
	return nil
}
