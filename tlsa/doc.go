// Package tlsa computes, formats, parses and matches DANE TLSA records
// (RFC 6698, RFC 7671, RFC 7672).
//
// It is a pure library: it never opens files, sockets or resolvers, and never
// prints. Callers pass in the bytes of certificates, keys and CSRs (PEM or DER)
// and the served certificate chain; results are returned as values.
//
// The main entry points are:
//
//   - [ParseMaterial] turns PEM or DER bytes into [Material] (certificates,
//     public keys, private keys, CSRs).
//   - [Compute] turns one piece of material into a [Record] for a given usage,
//     selector and matching type.
//   - [OwnerName] and [Record.Format] produce hash-slinger compatible lines.
//   - [ParseRecord] and [ParseZone] read records from presentation text.
//   - [Match] checks a served chain against a TLSA RRset with the SMTP rules of
//     RFC 7672, deciding as OpenSSL's DANE verifier (which Postfix uses) does.
package tlsa
