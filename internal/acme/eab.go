package acme

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-acme/lego/v5/registration"
)

// RegisterEAB registers the account of o (its directory, e-mail and state
// directory) with External Account Binding (RFC 8555 §7.3.4): CAs such as
// Sectigo, ZeroSSL or a commercial PKIoverheid successor bind the ACME
// account to a customer account through a key ID and a base64url HMAC key
// they hand out. An account already registered is left as it is
// (registered false); Obtain then uses it. The HMAC key never appears in
// errors or logs.
func RegisterEAB(ctx context.Context, o Options, kid, hmacKey string) (registered bool, err error) {
	if o.DirectoryURL == "" || o.StateDir == "" {
		return false, errors.New("acme: EAB registration needs the directory URL and the state directory")
	}
	if kid == "" || hmacKey == "" {
		return false, errors.New("acme: External Account Binding needs both the key ID and the HMAC key")
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	httpClient, err := newHTTPClient(o.CAFile)
	if err != nil {
		return false, err
	}
	defer lockLego(o.Log, "")()

	acct, err := loadAccount(o.StateDir, o.DirectoryURL, o.Email)
	if err != nil {
		return false, err
	}
	if acct.Registration != nil {
		return false, nil
	}
	client, err := newClient(o, acct, httpClient, nil)
	if err != nil {
		return false, err
	}
	reg, err := client.Registration.RegisterWithExternalAccountBinding(ctx, registration.RegisterEABOptions{
		TermsOfServiceAgreed: true, Kid: kid, HmacEncoded: hmacKey,
	})
	if err != nil {
		return false, fmt.Errorf("acme: registering the account at %s with External Account Binding (key ID %s): %w", o.DirectoryURL, kid, err)
	}
	acct.setRegistration(reg)
	if err := acct.save(); err != nil {
		return false, err
	}
	return true, nil
}
