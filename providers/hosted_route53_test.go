//go:build !nohosted

package providers

import (
	"encoding/xml"
	"net/http"
	"strings"
	"testing"

	"github.com/libdns/libdns"
)

// Amazon Route 53 API 2013-04-01 (REST-XML,
// https://docs.aws.amazon.com/Route53/latest/APIReference/):
// GET /2013-04-01/hostedzonesbyname?dnsname= finds the zone,
// GET /2013-04-01/hostedzone/{Id}/rrset lists ResourceRecordSets,
// POST /2013-04-01/hostedzone/{Id}/rrset/ with a ChangeResourceRecordSetsRequest
// changes them. Requests are SigV4-signed (Authorization: AWS4-HMAC-SHA256
// Credential=…/route53/aws4_request). Reached through the AWS SDK's
// service endpoint variable $AWS_ENDPOINT_URL_ROUTE_53 (so: not parallel).

type r53ChangeRequest struct {
	XMLName     xml.Name `xml:"ChangeResourceRecordSetsRequest"`
	ChangeBatch struct {
		Changes []struct {
			Action            string `xml:"Action"`
			ResourceRecordSet struct {
				Name   string   `xml:"Name"`
				Type   string   `xml:"Type"`
				TTL    int      `xml:"TTL"`
				Values []string `xml:"ResourceRecords>ResourceRecord>Value"`
			} `xml:"ResourceRecordSet"`
		} `xml:"Changes>Change"`
	} `xml:"ChangeBatch"`
}

func newRoute53Fake(t *testing.T) *fakeAPI {
	isolateAWS(t)
	const zonePath = "/2013-04-01/hostedzone/Z0EXAMPLE1NL/rrset"
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/xml")
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDTESTROUTE53/") {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>test</RequestId></ErrorResponse>`))
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/2013-04-01/hostedzonesbyname" && r.URL.Query().Get("dnsname") == "example.nl.":
			w.Write(hostedFixture(t, "route53", "hostedzonesbyname.xml"))
		case r.Method == http.MethodGet && r.URL.Path == zonePath:
			w.Write(hostedFixture(t, "route53", "rrset.xml"))
		case r.Method == http.MethodPost && strings.TrimSuffix(r.URL.Path, "/") == zonePath:
			var req r53ChangeRequest
			if err := xml.Unmarshal(body, &req); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				w.Write([]byte(`<?xml version="1.0"?><InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Messages><Message>bad XML</Message></Messages></InvalidChangeBatch>`))
				return
			}
			w.Write(hostedFixture(t, "route53", "change.xml"))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>NoSuchHostedZone</Code><Message>No hosted zone found</Message></Error><RequestId>test</RequestId></ErrorResponse>`))
		}
	})
	t.Setenv("AWS_ENDPOINT_URL_ROUTE_53", f.URL)
	return f
}

func newRoute53Provider(t *testing.T) Provider {
	p, err := New("route53", Settings{Env: mapEnv(map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIDTESTROUTE53", "AWS_SECRET_ACCESS_KEY": "test-route53-secret",
	})})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostedRoute53GetRecords(t *testing.T) {
	newRoute53Fake(t)
	checkGetTLSA(t, newRoute53Provider(t))
}

func TestHostedRoute53SetTLSA(t *testing.T) {
	for _, c := range []struct {
		name string
		recs []libdns.Record
	}{
		{"one record", []libdns.Record{hostedTLSA}},
		{"current + next", []libdns.Record{libdns.RR{Type: "TLSA", Name: "_25._tcp.mail", TTL: hostedTLSA.TTL, Data: "3 1 1 " + hostedOldHex}, hostedTLSA}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newRoute53Fake(t)
			p := newRoute53Provider(t)
			if _, err := p.SetRecords(hostedCtx(t), hostedZone, c.recs); err != nil {
				t.Fatal(err)
			}
			posts := f.requests(http.MethodPost, "/2013-04-01/hostedzone/Z0EXAMPLE1NL/rrset")
			if len(posts) != 1 {
				t.Fatalf("POSTs %+v, want one ChangeResourceRecordSets", f.all())
			}
			auth := posts[0].Header.Get("Authorization")
			if !strings.Contains(auth, "/us-east-1/route53/aws4_request") || !strings.Contains(auth, "Signature=") {
				t.Errorf("Authorization %q: want a SigV4 signature for route53 in us-east-1", auth)
			}
			var req r53ChangeRequest
			if err := xml.Unmarshal(posts[0].Body, &req); err != nil {
				t.Fatalf("body %s: %v", posts[0].Body, err)
			}
			if len(req.ChangeBatch.Changes) != 1 {
				t.Fatalf("changes %+v: want one", req.ChangeBatch.Changes)
			}
			ch := req.ChangeBatch.Changes[0]
			rs := ch.ResourceRecordSet
			var want []string
			for _, r := range c.recs {
				want = append(want, r.RR().Data)
			}
			if ch.Action != "UPSERT" || rs.Name != "_25._tcp.mail.example.nl." || rs.Type != "TLSA" || rs.TTL != 3600 || strings.Join(rs.Values, "|") != strings.Join(want, "|") {
				t.Errorf("change %+v, want UPSERT _25._tcp.mail.example.nl. 3600 TLSA %q", ch, want)
			}
		})
	}
}
