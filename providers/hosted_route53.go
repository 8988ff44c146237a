//go:build !nohosted

package providers

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/libdns/route53"
)

var _ Provider = (*route53.Provider)(nil)

// route53Factory builds Amazon Route 53 providers (AWS SDK for Go v2).
// SetRecords UPSERTs each (name, type) RRset in one ChangeResourceRecordSets
// call, so a TLSA RRset is replaced atomically. The SDK reads its usual
// environment too (e.g. $AWS_ENDPOINT_URL_ROUTE_53, shared config files).
func route53Factory() Factory {
	return Factory{
		Name: "route53",
		Doc: `access_key_id_file      file holding the access key id ($AWS_ACCESS_KEY_ID_FILE; or $AWS_ACCESS_KEY_ID)
secret_access_key_file  file holding the secret access key ($AWS_SECRET_ACCESS_KEY_FILE; or $AWS_SECRET_ACCESS_KEY)
session_token_file      optional: file holding a session token for temporary keys ($AWS_SESSION_TOKEN_FILE; or $AWS_SESSION_TOKEN)
profile                 instead of keys: a profile of ~/.aws/config and ~/.aws/credentials ($AWS_PROFILE)
default_credentials     instead of keys: true lets the AWS SDK's default chain (instance role, SSO, web identity) find credentials
region                  AWS region to sign for; default us-east-1, where Route 53 lives ($AWS_REGION)
hosted_zone_id          optional: the hosted zone id, skipping the lookup by name ($AWS_HOSTED_ZONE_ID)`,
		New: func(s Settings) (Provider, error) {
			p := &route53.Provider{
				Region:       s.Get("region", "AWS_REGION"),
				Profile:      s.Get("profile", "AWS_PROFILE"),
				HostedZoneID: s.Get("hosted_zone_id", "AWS_HOSTED_ZONE_ID"),
			}
			if p.Region == "" {
				p.Region = "us-east-1"
			}
			chain, err := boolSetting(s, "default_credentials", "", false)
			if err != nil {
				return nil, err
			}
			if secretGiven(s, "access_key_id", "AWS_ACCESS_KEY_ID") || secretGiven(s, "secret_access_key", "AWS_SECRET_ACCESS_KEY") {
				if p.AccessKeyId, err = s.Secret("access_key_id", "AWS_ACCESS_KEY_ID"); err != nil {
					return nil, err
				}
				if p.SecretAccessKey, err = s.Secret("secret_access_key", "AWS_SECRET_ACCESS_KEY"); err != nil {
					return nil, err
				}
				if secretGiven(s, "session_token", "AWS_SESSION_TOKEN") {
					if p.SessionToken, err = s.Secret("session_token", "AWS_SESSION_TOKEN"); err != nil {
						return nil, err
					}
				}
			} else if p.Profile == "" && !chain {
				return nil, fmt.Errorf("%w: missing AWS credentials: set access_key_id_file and secret_access_key_file (or $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY), or profile ($AWS_PROFILE), or default_credentials = true", ErrConfig)
			}
			// The library calls log.Fatalf when the SDK configuration does not
			// load (e.g. an unknown profile): load it once here, where that is
			// an error. This reads files and the environment, no network.
			opts := []func(*config.LoadOptions) error{config.WithRegion(p.Region)}
			if p.Profile != "" {
				opts = append(opts, config.WithSharedConfigProfile(p.Profile))
			}
			if _, err := config.LoadDefaultConfig(context.Background(), opts...); err != nil {
				return nil, fmt.Errorf("%w: AWS SDK configuration: %v", ErrConfig, err)
			}
			return p, nil
		},
	}
}

// secretGiven reports whether any source of the secret key is set, without
// reading it.
func secretGiven(s Settings, key, env string) bool {
	if _, ok := s.Values[key]; ok {
		return true
	}
	return s.Values[key+"_file"] != "" || s.env(env+"_FILE") != "" || s.env(env) != ""
}
