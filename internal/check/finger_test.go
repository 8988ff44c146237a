package check_test

import (
	"strings"
	"testing"

	"github.com/tlsactl/tlsactl/internal/testbed"
)

// TestParseFinger pins the reading of posttls-finger -v -l dane output that
// the live cross-checks rely on, on lines seen from Postfix 3.7 in this bed.
func TestParseFinger(t *testing.T) {
	const (
		ehloTLS = "posttls-finger: < 220 mail.example.test ESMTP Service Ready\n" +
			"posttls-finger: > EHLO vm\nposttls-finger: < 250-Hello vm\nposttls-finger: < 250-PIPELINING\n" +
			"posttls-finger: < 250-STARTTLS\nposttls-finger: < 250 SIZE\nposttls-finger: > STARTTLS\n"
		ehloPlain = "posttls-finger: < 220 mail.example.test ESMTP Service Ready\n" +
			"posttls-finger: > EHLO vm\nposttls-finger: < 250-Hello vm\nposttls-finger: < 250-PIPELINING\n" +
			"posttls-finger: < 250 SIZE\nposttls-finger: > QUIT\nposttls-finger: < 221 2.0.0 Bye\n"
		tail = ": TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256\n"
	)
	tests := []struct {
		name    string
		out     string
		want    testbed.FingerVerdict
		summary string
	}{
		{"DANE-EE match", ehloTLS +
			"posttls-finger: good.example.test[127.0.0.1]:33477: Matched DANE EE certificate at depth 0: 3 1 1 D4AA6FC2A299BD7E777AD24016C1FAA8B0AA82597F35BD874CD88344C7F5750D\n" +
			"posttls-finger: Verified TLS connection established to good.example.test[127.0.0.1]:33477" + tail,
			testbed.FingerVerified, "Verified"},
		{"DANE-TA match, insecure MX", ehloTLS +
			"posttls-finger: imx.example.test[127.0.0.1]:34819: Matched DANE TA certificate at depth 1: 2 1 1 C4F0E80454707CB5C6AD01A1542F31C99094F5EB751FBFE332B54BB09D97678F\n" +
			"posttls-finger: Trusted TLS connection established to imx.example.test[127.0.0.1]:34819" + tail,
			testbed.FingerDANEInsecureMX, "Trusted"},
		{"no matching record", ehloTLS +
			"posttls-finger: CA certificate verification failed for bothwrong.example.test[127.0.0.1]:35265: num=65:no matching DANE TLSA records\n" +
			"posttls-finger: Untrusted TLS connection established to bothwrong.example.test[127.0.0.1]:35265" + tail,
			testbed.FingerDANEFailed, "Untrusted"},
		{"expired leaf under 2 1 1", ehloTLS +
			"posttls-finger: server certificate verification failed for leafexpired211.example.test[127.0.0.1]:46655: certificate has expired\n" +
			"posttls-finger: Untrusted TLS connection established to leafexpired211.example.test[127.0.0.1]:46655" + tail,
			testbed.FingerDANEFailed, "Untrusted"},
		{"unusable records only",
			"posttls-finger: warning: _44255._tcp.unusable.example.test unsupported TLSA certificate usage: 1 1 1 B698828C0ACD7F5A49E6B59543C56004274B67E803F98D5BBB3494DBC3E5E4D5\n" +
				"posttls-finger: no usable TLSA records found, resorting to \"secure\"\n" + ehloTLS +
				"posttls-finger: certificate verification failed for unusable.example.test[127.0.0.1]:44255: untrusted issuer /CN=testbed root CA\n" +
				"posttls-finger: Untrusted TLS connection established to unusable.example.test[127.0.0.1]:44255" + tail,
			testbed.FingerNoUsableTLSA, "Untrusted"},
		{"no TLSA in force",
			"posttls-finger: lookup addrinsecure.unsigned.test type A flags RES_USE_DNSSEC\n" +
				"posttls-finger: no TLSA records found, resorting to \"secure\"\n" + ehloTLS +
				"posttls-finger: certificate verification failed for addrinsecure.unsigned.test[127.0.0.1]:35185: untrusted issuer /CN=testbed root CA\n" +
				"posttls-finger: Untrusted TLS connection established to addrinsecure.unsigned.test[127.0.0.1]:35185" + tail,
			testbed.FingerNoTLSA, "Untrusted"},
		{"no STARTTLS, TLSA in force", "posttls-finger: lookup nost.example.test type A flags RES_USE_DNSSEC\n" + ehloPlain,
			testbed.FingerNoSTARTTLS, ""},
		{"no STARTTLS, no TLSA", "posttls-finger: no TLSA records found, resorting to \"secure\"\n" + ehloPlain,
			testbed.FingerPlaintext, ""},
		{"bogus zone", "posttls-finger: Destination address lookup failed: Host or domain name not found. Name service error for name=bogus.bogus.test type=AAAA: Host not found, try again\n",
			testbed.FingerLookupFailed, ""},
		{"nothing recognisable", "posttls-finger: connect_addr: trying: x.example.test[127.0.0.1] port 1...\n", testbed.FingerUnknown, ""},
		// A "Verified" summary without a DANE match (PKIX with a CAfile) is
		// not a DANE verdict.
		{"PKIX verified", ehloTLS + "posttls-finger: Verified TLS connection established to x.example.test[127.0.0.1]:1" + tail, testbed.FingerUnknown, "Verified"},
	}
	for _, tc := range tests {
		r := testbed.ParseFinger(tc.out)
		if r.Verdict != tc.want || r.Summary != tc.summary {
			t.Errorf("%s: verdict %q summary %q, want %q %q", tc.name, r.Verdict, r.Summary, tc.want, tc.summary)
		}
		if !strings.Contains(r.Output, "posttls-finger") {
			t.Errorf("%s: output not kept", tc.name)
		}
	}
}
