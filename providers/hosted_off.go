//go:build nohosted

package providers

// This file replaces hosted.go and hosted_*.go in a minimal build
// (go build -tags nohosted): the binary carries RFC 2136 only, without the
// hosted APIs' client libraries (the AWS SDK among them).

// hostedFactories returns no factories: this build has no hosted DNS
// providers.
func hostedFactories() []Factory { return nil }

// omittedProviders names the hosted providers of the default build, so that
// a configuration naming one gets "built without hosted DNS providers"
// instead of "unknown DNS provider".
func omittedProviders() []string { return hostedProviderNames() }
