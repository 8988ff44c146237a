// Package rollover is the persistent, resumable state machine that changes a
// mail host's certificate and TLSA records in the order the NCSC prescribes:
//
//   - renew (same CA): deploy the new certificate, then replace the 3 1 1;
//     the published 2 1 1 covers the gap.
//   - ca-migration: publish the new CA's 2 1 1 beside the old one, wait until
//     every cache has it (published + TTL + margin), deploy the new
//     certificate, replace the 3 1 1, retire the old CA's 2 1 1.
//   - key-prepublish (RFC 7671 §8.1): publish the next key's 3 1 1, wait a
//     TTL, deploy the certificate on that key, retire the old 3 1 1.
//
// Every step is idempotent and re-checks the world before it acts. Before any
// DNS change or certificate swap the engine checks the safety invariant: for
// every TLSA RRset version a resolver may still hold and every chain the server
// may serve around the action, at least one usable record matches (RFC 7672).
// An action that would break it is refused with the reason and the time it
// becomes safe.
//
// The package sees DNS and the mail server only through the small [DNS] and
// [Deployer] interfaces, persists through [Store], and takes time from a
// [Clock]; decisions are pure functions of (state, observation, time).
package rollover
