// What a team would deploy instead of idgate (SPEC §11 lists "a Go net/http + crypto/ed25519
// service"): a standard-library Go service that verifies the same SD-JWT presentations, for the
// side-by-side figure in BENCHMARKS.md. Like compare/node it does what a JWT gateway does and no
// more: the issuer JWT's signature under the trusted key its `kid` names and its `exp`, then the
// KB-JWT's signature under the holder key in `cnf.jwk` — two Ed25519 signatures per
// presentation, the same two idgate verifies. No disclosures, revocation or replay checks.
//
// Same request as idgate's `POST /v1/verify` (`{"presentations": [...]}`, bearer key), so one wrk
// script drives both. 200 when every presentation passes, 422 otherwise (wrk counts non-2xx).
// Standard library only: it builds offline. Where it differs from jose on inputs the benchmark
// never sends, it is laxer: encoding/json matches member names case-insensitively, and `crit` is
// not looked at; jose also takes Ed448 keys, which this refuses.
//
//	go build -o idgate-compare-go . && PORT=8091 JWKS=trust.jwks.json API_KEY=... ./idgate-compare-go
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
}

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

type issuerClaims struct {
	Exp *float64 `json:"exp"`
	Cnf *struct {
		Jwk *jwk `json:"jwk"`
	} `json:"cnf"`
}

type result struct {
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
}

var b64 = base64.RawURLEncoding

var errUnknownKey = errors.New("unknown_key")

func publicKey(k *jwk) (ed25519.PublicKey, error) {
	if k.Kty != "OKP" || k.Crv != "Ed25519" {
		return nil, errors.New("not an Ed25519 key")
	}
	raw, err := b64.DecodeString(k.X)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("bad key")
	}
	return ed25519.PublicKey(raw), nil
}

// verifyJWS checks a compact JWS's EdDSA signature and returns its decoded payload.
func verifyJWS(token string, key func(header) (ed25519.PublicKey, error)) ([]byte, error) {
	last := strings.LastIndexByte(token, '.')
	first := strings.IndexByte(token, '.')
	if first < 0 || last == first {
		return nil, errors.New("not a compact JWS")
	}
	rawHeader, err := b64.DecodeString(token[:first])
	if err != nil {
		return nil, err
	}
	var h header
	if err := json.Unmarshal(rawHeader, &h); err != nil || h.Alg != "EdDSA" {
		return nil, errors.New("bad header")
	}
	pub, err := key(h)
	if err != nil {
		return nil, err
	}
	signature, err := b64.DecodeString(token[last+1:])
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(pub, []byte(token[:last]), signature) {
		return nil, errors.New("bad signature")
	}
	return b64.DecodeString(token[first+1 : last])
}

func verifyPresentation(text string, issuers map[string]ed25519.PublicKey) string {
	parts := strings.Split(text, "~")
	if len(parts) < 2 {
		return "malformed"
	}
	payload, err := verifyJWS(parts[0], func(h header) (ed25519.PublicKey, error) {
		if key, ok := issuers[h.Kid]; ok {
			return key, nil
		}
		return nil, errUnknownKey
	})
	if errors.Is(err, errUnknownKey) {
		return "unknown_key"
	} else if err != nil {
		return "bad_signature"
	}
	var claims issuerClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "malformed"
	}
	if claims.Exp == nil || *claims.Exp <= float64(time.Now().Unix()) {
		return "expired"
	}
	if claims.Cnf == nil || claims.Cnf.Jwk == nil {
		return "key_binding_invalid"
	}
	holder, err := publicKey(claims.Cnf.Jwk)
	if err != nil {
		return "key_binding_invalid"
	}
	if _, err := verifyJWS(parts[len(parts)-1], func(header) (ed25519.PublicKey, error) { return holder, nil }); err != nil {
		return "bad_signature" // as compare/node answers a KB-JWT that does not verify
	}
	return ""
}

func main() {
	file, err := os.ReadFile(os.Getenv("JWKS"))
	if err != nil {
		log.Fatal(err)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(file, &set); err != nil {
		log.Fatal(err)
	}
	issuers := map[string]ed25519.PublicKey{}
	for i := range set.Keys {
		if key, err := publicKey(&set.Keys[i]); err == nil {
			issuers[set.Keys[i].Kid] = key
		}
	}
	expected := sha256.Sum256([]byte("Bearer " + os.Getenv("API_KEY")))

	http.HandleFunc("/v1/verify", func(w http.ResponseWriter, r *http.Request) {
		given := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(given[:], expected[:]) != 1 {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		var request struct {
			Presentations []string `json:"presentations"`
		}
		if err != nil || json.Unmarshal(body, &request) != nil || request.Presentations == nil {
			http.Error(w, `{"error":"bad_request"}`, http.StatusBadRequest)
			return
		}
		results := make([]result, len(request.Presentations))
		status := http.StatusOK
		for i, text := range request.Presentations {
			if e := verifyPresentation(text, issuers); e != "" {
				results[i] = result{Valid: false, Error: e}
				status = http.StatusUnprocessableEntity
			} else {
				results[i] = result{Valid: true}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string][]result{"results": results})
	})
	http.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil))
}
