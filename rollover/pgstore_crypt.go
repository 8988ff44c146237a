//go:build !nopostgres

package rollover

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tlsactl/tlsactl/internal/safefile"
)

// materialKey is the key that seals staged material in a PGStore: 32 bytes
// from a file every runner shares (state_key_file), never stored in the
// database or logged.
type materialKey struct {
	file string
	aead cipher.AEAD
	id   string // hex of the first 8 bytes of SHA-256 of the key
}

// keyFix is how to make a key file.
const keyFix = "openssl rand -base64 32 > %[1]s; chmod 600 %[1]s (and give every runner the same file)"

// loadMaterialKey reads the 32-byte key of file: base64 (as `openssl rand
// -base64 32` writes it) or 64 hex digits, surrounding white space ignored.
// A file others may read (safefile.ReadPrivate's rule, as for every key
// file), a missing file or a key of another length is an error naming the
// file and the fix; the key bytes never appear in an error.
func loadMaterialKey(file string) (*materialKey, error) {
	b, err := safefile.ReadPrivate(file)
	if errors.Is(err, safefile.ErrTooOpen) {
		return nil, fmt.Errorf("rollover: state_key_file %w", err)
	} else if err != nil {
		return nil, fmt.Errorf("rollover: state_key_file %[2]w; create it with: "+keyFix, file, err)
	}
	text := strings.TrimSpace(string(b))
	var key []byte
	if len(text) == 64 {
		key, err = hex.DecodeString(text)
	} else {
		key, err = base64.StdEncoding.DecodeString(text)
	}
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("rollover: state_key_file %s does not hold a 32-byte key (base64 or 64 hex digits); create one with: "+keyFix, file)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	return &materialKey{file: file, aead: aead, id: hex.EncodeToString(sum[:8])}, nil
}

// sealedMaterial is the serialised Material that is sealed.
type sealedMaterial struct {
	ChainPEM []byte `json:"chain_pem"`
	KeyPEM   []byte `json:"key_pem"`
}

// materialAD is the additional data binding a sealed material to its host
// and name: a row copied to another host or name does not open.
func materialAD(host, name string) []byte { return []byte(host + "\x00" + name) }

// seal encrypts m with AES-256-GCM under a fresh random nonce.
func (k *materialKey) seal(host, name string, m Material) (nonce, sealed []byte, err error) {
	plain, err := json.Marshal(sealedMaterial{ChainPEM: m.ChainPEM, KeyPEM: m.KeyPEM})
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return nonce, k.aead.Seal(nil, nonce, plain, materialAD(host, name)), nil
}

// errWrongKey: sealed under another key than this runner's.
var errWrongKey = errors.New("material sealed with another key")

// open decrypts a sealed material of host/name stored with keyID.
func (k *materialKey) open(host, name, keyID string, nonce, sealed []byte) (Material, error) {
	if keyID != k.id {
		return Material{}, fmt.Errorf("%w: staged material of %s/%s was encrypted with key %s, state_key_file %s has key %s: give every runner the same key file",
			errWrongKey, host, name, keyID, k.file, k.id)
	}
	if len(nonce) != k.aead.NonceSize() {
		return Material{}, fmt.Errorf("rollover: staged material of %s/%s in the database is damaged (nonce of %d bytes): stage it again", host, name, len(nonce))
	}
	plain, err := k.aead.Open(nil, nonce, sealed, materialAD(host, name))
	if err != nil {
		return Material{}, fmt.Errorf("rollover: staged material of %s/%s in the database does not decrypt with key %s (damaged, or moved from another host or name): stage it again", host, name, k.id)
	}
	var sm sealedMaterial
	if err := json.Unmarshal(plain, &sm); err != nil {
		return Material{}, fmt.Errorf("rollover: staged material of %s/%s decrypts but does not parse: stage it again", host, name)
	}
	return Material{ChainPEM: sm.ChainPEM, KeyPEM: sm.KeyPEM}, nil
}
