package testbed

import (
	"testing"
	"time"
)

// Validity is a certificate's validity window. A zero bound takes the
// default of the certificate it applies to (see ValidityChainOptions).
type Validity struct {
	NotBefore, NotAfter time.Time
}

// ValidityChainOptions configures NewValidityChain: like ChainOptions, with a
// validity window for each of the three certificates, so a test can build an
// expired (or not yet valid) root, intermediate or leaf. Defaults: root
// now-24h..now+10y, intermediate now-24h..now+5y, leaf now-1h..now+90d.
type ValidityChainOptions struct {
	DNSNames                 []string // leaf SANs; default "mail.example.test"
	Root, Intermediate, Leaf Validity
}

// NewValidityChain generates root CA -> intermediate CA -> leaf with the
// given validity windows. Signatures, CA constraints and key usages are those
// of NewChain; only the dates differ.
func NewValidityChain(opts ValidityChainOptions) (*Chain, error) {
	return NewChain(ChainOptions{DNSNames: opts.DNSNames, NotBefore: opts.Leaf.NotBefore, NotAfter: opts.Leaf.NotAfter,
		Root: opts.Root, Intermediate: opts.Intermediate})
}

// MustValidityChain is NewValidityChain for tests: it calls tb.Fatal on error.
func MustValidityChain(tb testing.TB, opts ValidityChainOptions) *Chain {
	tb.Helper()
	c, err := NewValidityChain(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
