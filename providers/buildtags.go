package providers

// hostedProviderNames are the names of the hosted-DNS providers of the
// default build (hosted.go). A build with -tags nohosted leaves them out and
// names them in its refusal; a test of the default build keeps this list
// equal to hostedFactories.
func hostedProviderNames() []string {
	return []string{"desec", "gandi", "hetzner", "ovh", "route53", "transip"}
}
