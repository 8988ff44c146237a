package rollover_test

import (
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/tlsactl/tlsactl/rollover"
	"github.com/tlsactl/tlsactl/tlsa"
)

// Preview a CA migration: the RRset after each step and the earliest time
// each step can finish, with a TTL of one hour, a margin of five minutes and
// propagation taking two minutes. Preview is pure; nothing is changed.
func ExamplePreview() {
	hex := func(b string) string { return strings.Repeat(b, 32) } // a SHA-256 digest in hex
	var current []tlsa.Record
	for _, s := range []string{"3 1 1 " + hex("01"), "2 1 1 " + hex("02")} { // the old leaf key and the old CA
		r, err := tlsa.ParseRecord(s)
		if err != nil {
			log.Fatal(err)
		}
		current = append(current, r)
	}
	newTA := "2 1 1 " + hex("0a") // the new CA
	newEE := "3 1 1 " + hex("0b") // the leaf key of the certificate from the new CA
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

	steps := rollover.Preview(rollover.PlanCAMigration, current, 3600, 3600, newTA, newEE, "",
		5*time.Minute, 2*time.Minute, now)
	for _, s := range steps {
		fmt.Printf("%s by %s\n", s.Step, s.Earliest.Format(time.TimeOnly))
		for _, r := range s.Records {
			fmt.Printf("  %s…\n", r[:len("3 1 1 ")+4])
		}
	}
	// Output:
	// publish-new-ca by 12:02:00
	//   3 1 1 0101…
	//   2 1 1 0202…
	//   2 1 1 0a0a…
	// wait-ttl by 13:07:00
	//   3 1 1 0101…
	//   2 1 1 0202…
	//   2 1 1 0a0a…
	// deploy-certificate by 13:07:00
	//   3 1 1 0101…
	//   2 1 1 0202…
	//   2 1 1 0a0a…
	// replace-3-1-1 by 13:09:00
	//   2 1 1 0202…
	//   2 1 1 0a0a…
	//   3 1 1 0b0b…
	// retire-old-ca by 13:11:00
	//   2 1 1 0a0a…
	//   3 1 1 0b0b…
	// done by 13:11:00
	//   2 1 1 0a0a…
	//   3 1 1 0b0b…
}
