//go:build !nohosted

package providers

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/libdns/ovh"
)

var _ Provider = (*ovh.Provider)(nil)

// ovhEndpoints are the API endpoint names go-ovh knows.
var ovhEndpoints = []string{"ovh-eu", "ovh-ca", "ovh-us", "kimsufi-eu", "kimsufi-ca", "soyoustart-eu", "soyoustart-ca"}

// ovhFactory builds OVHcloud providers (the /1.0 API through
// github.com/ovh/go-ovh, requests signed with application key + secret +
// consumer key). SetRecords adds the missing values of each (name, type) with
// POST /domain/zone/{zone}/record, deletes the unwanted ones (rolling its own
// additions back on error) and then POSTs /domain/zone/{zone}/refresh.
func ovhFactory() Factory {
	return Factory{
		Name: "ovh",
		Doc: `endpoint                 API endpoint: ` + strings.Join(ovhEndpoints, ", ") + `, or an https URL ($OVH_ENDPOINT)
application_key_file     file holding the application key ($OVH_APPLICATION_KEY_FILE; or the key itself in $OVH_APPLICATION_KEY)
application_secret_file  file holding the application secret ($OVH_APPLICATION_SECRET_FILE; or $OVH_APPLICATION_SECRET)
consumer_key_file        file holding the consumer key ($OVH_CONSUMER_KEY_FILE; or $OVH_CONSUMER_KEY)
note                     the consumer key needs GET/POST /domain/zone/*/record, GET/PUT/DELETE /domain/zone/*/record/*, GET /domain/zone/*/soa, POST /domain/zone/*/refresh`,
		New: func(s Settings) (Provider, error) {
			endpoint := strings.TrimSpace(s.Get("endpoint", "OVH_ENDPOINT"))
			if endpoint == "" {
				return nil, fmt.Errorf("%w: missing endpoint: set endpoint in the configuration or $OVH_ENDPOINT (%s, or an https URL)", ErrConfig, strings.Join(ovhEndpoints, ", "))
			}
			if err := checkOVHEndpoint(endpoint); err != nil {
				return nil, err
			}
			p := &ovh.Provider{Endpoint: endpoint}
			var err error
			if p.ApplicationKey, err = s.Secret("application_key", "OVH_APPLICATION_KEY"); err != nil {
				return nil, err
			}
			if p.ApplicationSecret, err = s.Secret("application_secret", "OVH_APPLICATION_SECRET"); err != nil {
				return nil, err
			}
			if p.ConsumerKey, err = s.Secret("consumer_key", "OVH_CONSUMER_KEY"); err != nil {
				return nil, err
			}
			return p, nil
		},
	}
}

// checkOVHEndpoint accepts the names go-ovh knows, or an absolute http(s) URL
// without a trailing slash (go-ovh refuses one).
func checkOVHEndpoint(e string) error {
	for _, n := range ovhEndpoints {
		if e == n {
			return nil
		}
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.HasSuffix(e, "/") {
		return fmt.Errorf("%w: endpoint %q: want %s, or an https URL such as https://eu.api.ovh.com/1.0 (no trailing slash)", ErrConfig, e, strings.Join(ovhEndpoints, ", "))
	}
	return nil
}
