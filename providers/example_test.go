package providers_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/tlsactl/tlsactl/providers"
	"github.com/tlsactl/tlsactl/tlsa"
)

// Build an RFC 2136 provider (dynamic updates signed with a TSIG key, as
// BIND, Knot and PowerDNS take them) from settings, and turn a TLSA RRset
// into the libdns records that SetTLSA would write with it. Nothing here
// touches the network: the provider connects only when it is used.
func Example_rfc2136() {
	p, err := providers.New("rfc2136", providers.Settings{
		Values: map[string]string{
			"server":        "ns1.example.org:53",
			"tsig_key_file": "testdata/example-tsig.key",
		},
		// The default reader refuses a key file that others can read, as a
		// committed example file is; a real key file has mode 0600.
		ReadFile: os.ReadFile,
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = p // p.SetRecords, p.GetRecords, … or providers.SetTLSA(ctx, p, …)

	ee, err := tlsa.ParseRecord("3 1 1 4f8402b5d99abbc1915aa22bfcae6b3cbfd8185379e2f19948174350296bc48b")
	if err != nil {
		log.Fatal(err)
	}
	ta, err := tlsa.ParseRecord("2 1 1 704da579075dfb5527703d24c890a540b1a56b708d853c4053fb36c6b68489c4")
	if err != nil {
		log.Fatal(err)
	}
	set := providers.RRSet{
		Owner:   "_25._tcp.mail.example.org.",
		TTL:     time.Hour,
		Records: []tlsa.Record{ee, ta},
	}
	recs, err := providers.LibdnsRecords(set, "example.org.")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		rr := r.RR()
		fmt.Printf("%s %v %s %s\n", rr.Name, rr.TTL, rr.Type, rr.Data)
	}
	// Output:
	// _25._tcp.mail 1h0m0s TLSA 3 1 1 4f8402b5d99abbc1915aa22bfcae6b3cbfd8185379e2f19948174350296bc48b
	// _25._tcp.mail 1h0m0s TLSA 2 1 1 704da579075dfb5527703d24c890a540b1a56b708d853c4053fb36c6b68489c4
}
