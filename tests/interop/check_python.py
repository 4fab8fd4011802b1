#!/usr/bin/env python3
"""Independent checker for the generated cases (no SD-JWT library involved:
only `cryptography` for Ed25519 and hashlib).

Usage: check_python.py OUTDIR [OUTDIR...]

For each case it checks every part separately and collects the defects it
finds, named like idgate's outcomes. A case passes when its defects are
exactly {expect} (or none for "valid"), i.e. each negative case is wrong in
one way only, so whatever order idgate checks things in, the label holds.
Exit status 1 if any case fails.
"""
import base64
import hashlib
import json
import re
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_AGE, SKEW = 60, 5
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def b64d(s: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def ed_verify(x_b64: str, jwt: str) -> bool:
    h, p, s = jwt.split(".")
    try:
        Ed25519PublicKey.from_public_bytes(b64d(x_b64)).verify(
            b64d(s), f"{h}.{p}".encode("ascii"))
        return True
    except InvalidSignature:
        return False


def digest(s: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(s.encode("ascii")).digest()).rstrip(b"=").decode()


def collect_digests(obj, obj_digests, arr_digests):
    """All `_sd` digests (object properties) and `...` digests (array elements)."""
    if isinstance(obj, dict):
        for d in obj.get("_sd", []):
            obj_digests.add(d)
        for k, v in obj.items():
            if k != "_sd":
                collect_digests(v, obj_digests, arr_digests)
    elif isinstance(obj, list):
        for el in obj:
            if isinstance(el, dict) and set(el) == {"..."}:
                arr_digests.add(el["..."])
            else:
                collect_digests(el, obj_digests, arr_digests)


def check_disclosures(payload, discs):
    """Returns (problems, disclosed claim labels). Disclosed values may carry
    further digests (recursive disclosures), so resolve to a fixed point."""
    obj_d, arr_d = set(), set()
    collect_digests(payload, obj_d, arr_d)
    pending = {}
    problems, labels = [], []
    for d in discs:
        try:
            arr = json.loads(b64d(d))
            ok = (isinstance(arr, list) and len(arr) in (2, 3) and isinstance(arr[0], str)
                  and (len(arr) == 2 or (isinstance(arr[1], str) and arr[1] not in ("_sd", "..."))))
        except ValueError:
            ok = False
        if not ok:
            problems.append("malformed disclosure")
            continue
        h = digest(d)
        if h in pending:
            problems.append("duplicate disclosure")
        pending[h] = arr
    progress = True
    while progress:
        progress = False
        for h, arr in list(pending.items()):
            if (len(arr) == 3 and h in obj_d) or (len(arr) == 2 and h in arr_d):
                labels.append(arr[1] if len(arr) == 3 else f"[{json.dumps(arr[1])}]")
                collect_digests(arr[-1], obj_d, arr_d)
                del pending[h]
                progress = True
    for arr in pending.values():
        problems.append(f"unreferenced disclosure {arr[1:]}")
    return problems, labels


def check_case(case, keys):
    defects, notes = set(), []
    at, aud, nonce = case["at"], case["audience"], case.get("nonce")
    parts = case["presentation"].split("~")
    jwt, discs, kb = parts[0], parts[1:-1], parts[-1]

    # Issuer JWT
    h, p, _ = jwt.split(".")
    header, payload = json.loads(b64d(h)), json.loads(b64d(p))
    if header.get("alg") not in ("EdDSA", "Ed25519") or header.get("typ") not in ("dc+sd-jwt", "vc+sd-jwt"):
        defects.add("malformed"); notes.append(f"header {header}")
    key = keys.get(header.get("kid"))
    if key is None:
        defects.add("unknown_key"); notes.append(f"iss-sig: kid {header.get('kid')!r} not in JWKS")
    elif not ed_verify(key["x"], jwt):
        defects.add("bad_signature"); notes.append("iss-sig: FAIL")
    else:
        notes.append("iss-sig: ok")
        if payload.get("iss") != key.get("iss"):
            defects.add("malformed"); notes.append("iss mismatch")

    # Claims in the clear
    cnf = payload.get("cnf", {}).get("jwk", {})
    if not (all(isinstance(payload.get(c), int) for c in ("iat", "exp"))
            and isinstance(payload.get("vct"), str) and payload.get("_sd_alg") == "sha-256"
            and ID_RE.match(str(payload.get("sub", ""))) and ID_RE.match(str(payload.get("jti", "")))
            and cnf.get("kty") == "OKP" and cnf.get("crv") == "Ed25519"):
        defects.add("malformed"); notes.append("clear claims malformed")
    if payload.get("exp", 0) <= at:
        defects.add("expired"); notes.append(f"exp {payload.get('exp')} <= at")
    if payload.get("nbf", 0) > at + SKEW or payload.get("iat", 0) > at + SKEW:
        defects.add("not_yet_valid")

    # Disclosures
    problems, labels = check_disclosures(payload, discs)
    if problems:
        defects.add("disclosure_invalid"); notes.append("discl: " + "; ".join(problems))
    else:
        notes.append(f"discl: {len(discs)} ok {labels}")

    # Key binding
    if kb == "":
        defects.add("key_binding_missing"); notes.append("kb: none")
    else:
        kh, kp, _ = kb.split(".")
        khdr, kpl = json.loads(b64d(kh)), json.loads(b64d(kp))
        prefix = case["presentation"][: -len(kb)]
        kb_ok = []
        if khdr != {"alg": khdr.get("alg"), "typ": "kb+jwt"} or khdr.get("alg") not in ("EdDSA", "Ed25519"):
            kb_ok.append(f"header {khdr}")
        if not (cnf.get("x") and ed_verify(cnf["x"], kb)):
            kb_ok.append("sig FAIL")
        if kpl.get("sd_hash") != digest(prefix):
            kb_ok.append("sd_hash FAIL")
        if kpl.get("aud") != aud:
            kb_ok.append("aud FAIL")
        if nonce is not None and kpl.get("nonce") != nonce:
            kb_ok.append("nonce FAIL")
        if kb_ok:
            defects.add("key_binding_invalid")
        age = at - kpl.get("iat", 0)
        if age > MAX_AGE or age < -SKEW:
            defects.add("presentation_stale"); kb_ok.append(f"age {age}s")
        notes.append("kb: " + (", ".join(kb_ok) if kb_ok else f"sig ok, sd_hash ok, age {age}s"))

    want = set() if case["expect"] == "valid" else {case["expect"]}
    return defects == want, sorted(defects) or ["valid"], notes


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: check_python.py OUTDIR [OUTDIR...]")
    failed = 0
    for outdir in map(Path, sys.argv[1:]):
        jwks = json.loads((outdir / "trust.jwks.json").read_text())
        for k in jwks["keys"]:
            assert set(k) == {"kty", "crv", "x", "kid", "iss"}, f"unexpected JWKS members {k}"
        keys = {k["kid"]: k for k in jwks["keys"]}
        print(f"== {outdir}")
        for line in (outdir / "cases.jsonl").read_text().splitlines():
            case = json.loads(line)
            ok, found, notes = check_case(case, keys)
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {case['name']:<22} expect={case['expect']:<20} "
                  f"found={','.join(found)}\n       " + " | ".join(notes))
    print("checker: all labels confirmed" if not failed else f"checker: {failed} case(s) mislabelled")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
