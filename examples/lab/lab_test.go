package lab

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestLab runs examples/lab/lab.sh as a newcomer would and checks that it
// printed every step with "ok", in order, and the closing line.
func TestLab(t *testing.T) {
	for _, b := range [][2]string{{"knotd", "knot"}, {"keymgr", "knot"}, {"unbound", "unbound"}, {"postfix", "postfix"}, {"lego", "lego"}, {"openssl", "openssl"}, {"bash", "bash"}} {
		testbed.Require(t, b[0], b[1])
	}
	testbed.RequirePebble(t)
	testbed.RequireRoot(t, "the lab starts a private Postfix")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "lab.sh")
	cmd.Env = append(os.Environ(), "LAB_TTL=3")
	out, err := cmd.CombinedOutput()
	text := string(out)
	t.Logf("lab.sh output:\n%s", text)
	if err != nil {
		t.Fatalf("lab.sh: %v", err)
	}
	want := []string{
		"build tlsactl and the lab bed",
		"start Knot, Unbound, Postfix and Pebble on 127.0.0.1",
		"check DANE before: lab CA chain, 3 1 1 + 2 1 1 published",
		"lego issues a certificate from Pebble (DNS-01 via RFC 2136); the hook sees a new CA and holds it back",
		"publish new CA 2 1 1 beside the old records",
		"wait a TTL, deploy the Pebble certificate, retire the old records (rollover run --wait)",
		"Postfix serves the Pebble chain",
		"check DANE after the CA migration",
		"lego renews with a fresh key; the hook deploys it and replaces the 3 1 1",
		"check DANE after the renewal",
		"tear down",
	}
	stepLine := regexp.MustCompile(`(?m)^step (\d+): (.*) … (ok|FAILED)$`)
	got := stepLine.FindAllStringSubmatch(text, -1)
	if len(got) != len(want) {
		t.Fatalf("%d step lines, want %d", len(got), len(want))
	}
	for i, m := range got {
		if m[1] != strconv.Itoa(i+1) || m[2] != want[i] || m[3] != "ok" {
			t.Errorf("step line %q, want %q", m[0], "step "+strconv.Itoa(i+1)+": "+want[i]+" … ok")
		}
	}
	if !strings.Contains(text, "lab done: a CA migration and a renewal, DANE intact at every step") {
		t.Error("no closing line")
	}
	if !strings.Contains(text, "held back") || !strings.Contains(text, "ca-migration rollover done") || !strings.Contains(text, "renew rollover done") {
		t.Error("the output lacks the hook's hold-back, the migration or the renewal")
	}
}
