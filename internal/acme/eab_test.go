package acme

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestRegisterEAB against a real Pebble that requires External Account
// Binding (its EAB test configuration).
func TestRegisterEAB(t *testing.T) {
	testbed.RequirePebble(t)
	dir := testbed.PebbleEABTestDir(t)
	// No challenge is solved here: the DNS server is never asked.
	pb := testbed.NewPebble(t, testbed.PebbleConfig{DNSServer: "127.0.0.1:9", TestDir: dir, Env: []string{"PEBBLE_WFE_NONCEREJECT=0"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	state := t.TempDir()
	o := Options{DirectoryURL: pb.DirectoryURL, Email: "hostmaster@example.test", CAFile: pb.CAFile, StateDir: state}

	// A wrong HMAC key is refused by the CA; nothing is stored as
	// registered, and the key is not in the error.
	wrong := "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH"
	if reg, err := RegisterEAB(ctx, o, testbed.PebbleEABKID, wrong); err == nil || reg {
		t.Fatalf("a wrong HMAC key: registered %v, %v", reg, err)
	} else if strings.Contains(err.Error(), wrong) {
		t.Errorf("the error shows the HMAC key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(AccountDir(state, o.DirectoryURL, o.Email), accountJSONFile)); !os.IsNotExist(err) {
		t.Errorf("a failed registration left %s: %v", accountJSONFile, err)
	}

	reg, err := RegisterEAB(ctx, o, testbed.PebbleEABKID, testbed.PebbleEABHMAC)
	if err != nil || !reg {
		t.Fatalf("RegisterEAB: %v, %v", reg, err)
	}
	acct, err := loadAccount(state, o.DirectoryURL, o.Email)
	if err != nil || acct.Registration == nil || acct.Registration.URI == "" {
		t.Fatalf("stored account: %+v, %v", acct, err)
	}
	fi, err := os.Stat(filepath.Join(acct.dir, accountKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("account key: %v, %v; want mode 0600", fi, err)
	}
	// Registered already: nothing is sent again (Obtain uses the account).
	if reg, err := RegisterEAB(ctx, o, testbed.PebbleEABKID, testbed.PebbleEABHMAC); err != nil || reg {
		t.Errorf("second RegisterEAB: %v, %v; want false, nil", reg, err)
	}
	if _, err := RegisterEAB(ctx, o, "", testbed.PebbleEABHMAC); err == nil {
		t.Errorf("an empty key ID was accepted")
	}
}
