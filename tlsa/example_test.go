package tlsa_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/tlsactl/tlsactl/tlsa"
)

// Compute the "3 1 1" record of a server's leaf certificate and the
// "2 1 1" record of its issuing CA from the PEM chain the server presents,
// then check the chain against that RRset as an SMTP client would.
//
// testdata/example-chain.pem is a fixed leaf for mail.example.org and the
// self-signed test CA that issued it (public material only; the keys were
// discarded).
func Example() {
	pemChain, err := os.ReadFile("testdata/example-chain.pem")
	if err != nil {
		log.Fatal(err)
	}
	material, err := tlsa.ParseMaterial("example-chain.pem", pemChain)
	if err != nil {
		log.Fatal(err)
	}
	chain := tlsa.Certificates(material) // leaf first, then the CA

	ee, err := tlsa.Compute(material[0], tlsa.DANEEE, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		log.Fatal(err)
	}
	ta, err := tlsa.Compute(material[len(material)-1], tlsa.DANETA, tlsa.SelectorSPKI, tlsa.MatchSHA256)
	if err != nil {
		log.Fatal(err)
	}
	owner, err := tlsa.OwnerName("25", "tcp", "mail.example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(owner, "IN TLSA", ee)
	fmt.Println(owner, "IN TLSA", ta)

	res := tlsa.Match(chain, []tlsa.Record{ee, ta}, tlsa.MatchOptions{
		Names: []string{"mail.example.org"},
		Now:   time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	for _, v := range res.Verdicts {
		fmt.Printf("%d %d %d: %s at depth %d\n", v.Record.Usage, v.Record.Selector, v.Record.MatchingType, v.Reason, v.Depth)
	}
	fmt.Println("matched:", res.Matched())
	// Output:
	// _25._tcp.mail.example.org. IN TLSA 3 1 1 4f8402b5d99abbc1915aa22bfcae6b3cbfd8185379e2f19948174350296bc48b
	// _25._tcp.mail.example.org. IN TLSA 2 1 1 704da579075dfb5527703d24c890a540b1a56b708d853c4053fb36c6b68489c4
	// 3 1 1: matched at depth 0
	// 2 1 1: matched at depth 1
	// matched: true
}
