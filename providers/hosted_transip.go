//go:build !nohosted

package providers

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/libdns/transip"
)

var _ Provider = (*transip.Provider)(nil)

// transipFactory builds TransIP providers. TransIP authenticates with an RSA
// key pair made in the control panel: github.com/libdns/transip signs
// POST /v6/auth with the private key and then sends the short-lived bearer
// token it gets back. The token is kept in memory only (the library's default
// would cache it in a file under $TMPDIR). Records are changed one entry at a
// time (POST / DELETE /v6/domains/{zone}/dns with {"dnsEntry": …}): SetRecords
// deletes the TLSA entries that are not wanted and adds the missing ones, not
// in one atomic call.
func transipFactory() Factory {
	return Factory{
		Name: "transip",
		Doc: `account_name      TransIP account (login) name ($TRANSIP_ACCOUNT_NAME)
private_key_file  PEM file with the API key pair's RSA private key ($TRANSIP_PRIVATE_KEY_FILE; or the PEM itself in $TRANSIP_PRIVATE_KEY)
ip_whitelisted    true when the key pair only works from whitelisted IP addresses (a non-global key); default false ($TRANSIP_IP_WHITELISTED)
note              entries are changed one at a time, not atomically; TTLs outside 1..86400 s become 3600`,
		New: func(s Settings) (Provider, error) {
			login := s.Get("account_name", "TRANSIP_ACCOUNT_NAME")
			if login == "" {
				return nil, fmt.Errorf("%w: missing account_name: set account_name in the configuration or $TRANSIP_ACCOUNT_NAME", ErrConfig)
			}
			pemText, err := s.Secret("private_key", "TRANSIP_PRIVATE_KEY")
			if err != nil {
				return nil, err
			}
			pkcs8, err := transipPKCS8(pemText)
			if err != nil {
				return nil, fmt.Errorf("%w: private_key: %v", ErrConfig, err)
			}
			whitelisted, err := boolSetting(s, "ip_whitelisted", "TRANSIP_IP_WHITELISTED", false)
			if err != nil {
				return nil, err
			}
			return &transip.Provider{
				AuthLogin:        login,
				AuthNotGlobalKey: whitelisted,
				PrivateKey:       pkcs8,
				TokenStorage:     "memory",
			}, nil
		},
	}
}

// transipPKCS8 checks that pemText holds an RSA private key and returns it as
// a PKCS #8 PEM block ("-----BEGIN PRIVATE KEY-----"), the only form the
// library takes in memory: anything else it would try to open as a file name,
// and its error would then quote the key. Errors never contain key material.
func transipPKCS8(pemText string) (string, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return "", fmt.Errorf("not a PEM file (want the RSA private key TransIP generated, -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("the PKCS #8 private key does not parse")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return "", fmt.Errorf("the private key is a %T, TransIP signs with RSA", k)
		}
		key = rk
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("the PKCS #1 RSA private key does not parse")
		}
		key = k
	default:
		return "", fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("re-encoding the private key failed")
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}
