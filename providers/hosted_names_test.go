//go:build !nohosted

package providers

import (
	"slices"
	"testing"
)

// The refusal of a -tags nohosted build names exactly the hosted providers
// of the default build.
func TestHostedProviderNamesMatchFactories(t *testing.T) {
	var got []string
	for _, f := range hostedFactories() {
		got = append(got, f.Name)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(hostedProviderNames()))
	if !slices.Equal(got, want) {
		t.Fatalf("hostedProviderNames() = %v, hostedFactories() names = %v: update providers/buildtags.go", want, got)
	}
	if len(omittedProviders()) != 0 {
		t.Fatalf("the default build omits %v", omittedProviders())
	}
}
