#!/usr/bin/env python3
"""Generate SD-JWT VC presentations for idgate with the reference Python
library (PyPI `sd-jwt`, openwallet-foundation-labs/sd-jwt-python).

Usage: gen_python.py OUTDIR   -> OUTDIR/trust.jwks.json, OUTDIR/cases.jsonl

Genuine credentials and presentations come from the library's SDJWTIssuer and
SDJWTHolder. Negative cases start from a genuine string and tamper with it
here; when only one part is meant to be wrong, the KB-JWT is re-signed with
the holder key so that exactly one defect remains (check_python.py checks this).
Output is deterministic: fixed key seeds, seeded salts, fixed timestamps, and
Ed25519 signatures are deterministic.
"""
import base64
import hashlib
import json
import logging
import random
import sys
from pathlib import Path

from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sd_jwt.holder
from sd_jwt.common import SDJWTCommon, SDObj
from sd_jwt.holder import SDJWTHolder
from sd_jwt.issuer import SDJWTIssuer

CRED_IAT = 1_763_000_000
THREE_YEARS = 3 * 365 * 24 * 3600
KB_IAT = 1_763_900_000
AT = KB_IAT + 10  # KB-JWT is 10 s old: fresh (max age 60 s, skew 5 s)
AUD = "https://verifier.example/bank"
ISSUER = "https://issuer.example/python"
KID = "py-issuer-1"
VCT = "https://credentials.example/identity_card"


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def ed25519_jwk(label: str) -> JWK:
    """Deterministic Ed25519 JWK from a label. Built from raw x/d (not
    JWK.from_pyca) because from_pyca adds a thumbprint `kid`, which would then
    leak into cnf.jwk; idgate's documented cnf.jwk is just kty/crv/x."""
    seed = hashlib.sha256(label.encode()).digest()
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return JWK(kty="OKP", crv="Ed25519", x=b64e(pub), d=b64e(seed))


ISSUER_KEY = ed25519_jwk("idgate-interop/python/issuer")
HOLDER_KEY = ed25519_jwk("idgate-interop/python/holder")
ROGUE_KEY = ed25519_jwk("idgate-interop/python/rogue")  # never in the JWKS

FULL = {"given_name": True, "family_name": True, "birthdate": True,
        "address": {"locality": True, "street_address": True},
        "nationalities": [True, True]}
PARTIAL = {"given_name": True, "address": {"locality": True},
           "nationalities": [False, True]}


def issue(key=ISSUER_KEY, kid=KID, iat=CRED_IAT, typ="dc+sd-jwt") -> str:
    claims = {
        # In the clear: SD-JWT VC forbids making these selectively disclosable.
        "iss": ISSUER, "iat": iat, "nbf": iat, "exp": iat + THREE_YEARS,
        "vct": VCT, "sub": "1012345678", "jti": "card-0001",
        SDObj("given_name"): "Erika",
        SDObj("family_name"): "Mustermann",
        SDObj("birthdate"): "1984-01-26",
        # Nested object: `address` is clear, with its own `_sd` inside.
        # Non-ASCII on purpose: Python's json.dumps emits it as \u00df.
        "address": {SDObj("locality"): "Berlin",
                    SDObj("street_address"): "Heidestraße 17",
                    "country": "DE"},
        # Array-element disclosures: [{"...": digest}, ...]
        "nationalities": [SDObj("DE"), SDObj("FR")],
    }
    issuer = SDJWTIssuer(
        claims, key, holder_key=HOLDER_KEY, sign_alg="EdDSA",
        add_decoy_claims=True,  # verifier must ignore unmatched digests
        # The library's default typ is "example+sd-jwt"; override it and add kid.
        extra_header_parameters={"typ": typ, "kid": kid})
    return issuer.sd_jwt_issuance


def present(issuance: str, frame, nonce, kb_iat=KB_IAT, with_kb=True) -> str:
    # SDJWTHolder stamps the KB-JWT iat with time.time(); pin it instead.
    sd_jwt.holder.time = lambda: kb_iat
    holder = SDJWTHolder(issuance)
    if with_kb:
        holder.create_presentation(frame, nonce=nonce, aud=AUD,
                                   holder_key=HOLDER_KEY, sign_alg="EdDSA")
    else:  # bearer copy: ends with "~", no KB-JWT
        holder.create_presentation(frame)
    return holder.sd_jwt_presentation


# --- helpers for tampering with library output -----------------------------

def split(pres: str):
    parts = pres.split("~")
    return parts[0], parts[1:-1], parts[-1]


def sd_hash(prefix: str) -> str:
    return b64e(hashlib.sha256(prefix.encode("ascii")).digest())


def kb_jwt(prefix: str, nonce: str, iat=KB_IAT, hash_value=None) -> str:
    """KB-JWT signed by the holder, same shape as SDJWTHolder produces."""
    payload = {"nonce": nonce, "aud": AUD, "iat": iat,
               "sd_hash": hash_value or sd_hash(prefix)}
    jws = JWS(payload=json.dumps(payload))
    jws.add_signature(HOLDER_KEY, alg="EdDSA",
                      protected=json.dumps({"alg": "EdDSA", "typ": "kb+jwt"}))
    return jws.serialize(compact=True)


def rebind(jwt: str, disclosures, nonce: str) -> str:
    """Reassemble and give it a fresh, correct KB-JWT."""
    prefix = "~".join([jwt, *disclosures]) + "~"
    return prefix + kb_jwt(prefix, nonce)


def disclosure_name(d: str):
    arr = json.loads(b64d(d))
    return arr[1] if len(arr) == 3 else None


def build_cases():
    cred = issue()
    cases = []

    def add(name, expect, pres):
        cases.append({"name": name, "presentation": pres, "expect": expect,
                      "at": AT, "audience": AUD, "nonce": f"nonce-py-{name}"})

    def n(name):
        return f"nonce-py-{name}"

    add("valid", "valid", present(cred, FULL, n("valid")))
    add("valid_partial", "valid", present(cred, PARTIAL, n("valid_partial")))
    add("valid_no_disclosures", "valid", present(cred, {}, n("valid_no_disclosures")))
    add("valid_typ_vc", "valid",
        present(issue(typ="vc+sd-jwt"), FULL, n("valid_typ_vc")))

    # Change a clear claim (sub) and keep the old issuer signature.
    jwt, discs, _ = split(present(cred, FULL, n("payload_byte")))
    h, p, s = jwt.split(".")
    payload = json.loads(b64d(p))
    payload["sub"] = "1012345679"
    forged = ".".join([h, b64e(json.dumps(payload).encode()), s])
    add("payload_byte", "bad_signature", rebind(forged, discs, n("payload_byte")))

    # Swap the given_name disclosure for a well-formed one no digest references.
    jwt, discs, _ = split(present(cred, FULL, n("disclosure_tampered")))
    fake = b64e(json.dumps(["c2FsdHNhbHRzYWx0c2FsdA", "given_name", "Mallory"]).encode())
    discs = [fake if disclosure_name(d) == "given_name" else d for d in discs]
    add("disclosure_tampered", "disclosure_invalid",
        rebind(jwt, discs, n("disclosure_tampered")))

    # Correctly signed KB-JWT whose sd_hash covers one disclosure too few.
    jwt, discs, _ = split(present(cred, FULL, n("kb_sd_hash")))
    prefix = "~".join([jwt, *discs]) + "~"
    wrong = sd_hash("~".join([jwt, *discs[:-1]]) + "~")
    add("kb_sd_hash", "key_binding_invalid",
        prefix + kb_jwt(prefix, n("kb_sd_hash"), hash_value=wrong))

    # Flip one bit of the KB-JWT signature bytes (not the b64 text, whose last
    # char may carry only padding bits).
    pres = present(cred, FULL, n("kb_signature"))
    head, kb = pres.rsplit("~", 1)
    kh, kp, ks = kb.split(".")
    sig = bytearray(b64d(ks))
    sig[0] ^= 0x01
    add("kb_signature", "key_binding_invalid",
        head + "~" + ".".join([kh, kp, b64e(bytes(sig))]))

    add("wrong_key", "bad_signature",
        present(issue(key=ROGUE_KEY), FULL, n("wrong_key")))
    # Signed by the genuine issuer key, but the kid is not in the JWKS.
    add("unknown_kid", "unknown_key",
        present(issue(kid="py-issuer-unknown"), FULL, n("unknown_kid")))
    # exp = CRED_IAT - 1 day, i.e. ~10 days before `at`.
    add("expired", "expired",
        present(issue(iat=CRED_IAT - THREE_YEARS - 86_400), FULL, n("expired")))
    add("stale_iat", "presentation_stale",
        present(cred, FULL, n("stale_iat"), kb_iat=AT - 600))
    add("bearer_no_kb", "key_binding_missing",
        present(cred, FULL, None, with_kb=False))
    return cases


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_python.py OUTDIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    # Deterministic salts/decoys: the library's own switch for reproducible
    # examples (it logs a warning per salt, silenced here).
    SDJWTCommon.unsafe_randomness = True
    random.seed(9901)
    logging.getLogger("sd_jwt").setLevel(logging.ERROR)

    cases = build_cases()
    pub = ISSUER_KEY.export_public(as_dict=True)
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": pub["x"],
                      "kid": KID, "iss": ISSUER}]}
    (out / "trust.jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")
    with open(out / "cases.jsonl", "w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    print(f"wrote {len(cases)} cases to {out}/cases.jsonl")


if __name__ == "__main__":
    main()
