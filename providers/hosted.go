//go:build !nohosted

package providers

import (
	"fmt"
	"strconv"
	"strings"
)

// hostedFactories returns the hosted-DNS adapters (deSEC, TransIP, Hetzner,
// OVH, Route 53, Gandi).
//
// Cloudflare is deliberately not offered: github.com/libdns/cloudflare
// (v0.2.2) writes a TLSA record only as a "content" string, while
// Cloudflare's API wants TLSA as structured "data" (usage, selector,
// matching_type, certificate), so it cannot publish TLSA. Reach such zones
// through another provider or RFC 2136.
func hostedFactories() []Factory {
	return []Factory{
		desecFactory(),
		gandiFactory(),
		hetznerFactory(),
		ovhFactory(),
		route53Factory(),
		transipFactory(),
	}
}

// omittedProviders names the providers this build leaves out: none in the
// default build (hosted_off.go lists the hosted ones under -tags nohosted).
func omittedProviders() []string { return nil }

// boolSetting reads a plain boolean setting; "" is def.
func boolSetting(s Settings, key, env string, def bool) (bool, error) {
	v := strings.TrimSpace(s.Get(key, env))
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s must be true or false, not %q", ErrConfig, key, v)
	}
	return b, nil
}
