#!/usr/bin/env node
// Generate SD-JWT VC presentations for idgate with the npm @sd-jwt/* libraries
// (openwallet-foundation/sd-jwt-js). Usage: node gen_node.mjs OUTDIR
//
// Same cases as gen_python.py, from an independent implementation. Genuine
// credentials/presentations come from SDJwtVcInstance.issue/present; negative
// cases tamper with that output here, re-signing the KB-JWT (with the
// library's KBJwt class) where only one part is meant to be wrong.
// @sd-jwt/crypto-nodejs only ships ES256/384/512 signers, so Ed25519 signing
// uses node:crypto directly; its `digest` is used as the SD-JWT hasher.
// Deterministic: fixed key seeds, counter-based salts, fixed timestamps.
import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SDJwtVcInstance } from '@sd-jwt/sd-jwt-vc';
import { KBJwt } from '@sd-jwt/core';
import { digest } from '@sd-jwt/crypto-nodejs';

const CRED_IAT = 1_763_000_000;
const THREE_YEARS = 3 * 365 * 24 * 3600;
const KB_IAT = 1_763_900_000;
const AT = KB_IAT + 10; // KB-JWT is 10 s old: fresh (max age 60 s, skew 5 s)
const AUD = 'https://verifier.example/bank';
const ISSUER = 'https://issuer.example/node';
const KID = 'node-issuer-1';
const VCT = 'https://credentials.example/identity_card';

const b64e = (buf) => Buffer.from(buf).toString('base64url');
const b64d = (s) => Buffer.from(s, 'base64url');
const sha256 = (s) => createHash('sha256').update(s).digest();

// Deterministic Ed25519 key: PKCS#8 DER prefix for Ed25519 + 32-byte seed.
function edKey(label) {
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), sha256(label)]);
  const priv = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  const { kty, crv, x } = createPublicKey(priv).export({ format: 'jwk' });
  return { priv, jwk: { kty, crv, x } };
}
const ISSUER_KEY = edKey('idgate-interop/node/issuer');
const HOLDER_KEY = edKey('idgate-interop/node/holder');
const ROGUE_KEY = edKey('idgate-interop/node/rogue'); // never in the JWKS

const signerFor = (key) => async (data) => b64e(sign(null, Buffer.from(data), key.priv));
const edVerify = (jwk, data, sig) =>
  verify(null, Buffer.from(data), createPublicKey({ key: jwk, format: 'jwk' }), b64d(sig));

let saltCounter = 0;
const saltGenerator = async () => b64e(sha256(`idgate-interop/node/salt/${saltCounter++}`).subarray(0, 16));

function instance(issuerKey, trustedJwk) {
  return new SDJwtVcInstance({
    signer: signerFor(issuerKey),
    signAlg: 'EdDSA',
    hasher: digest,
    hashAlg: 'sha-256',
    saltGenerator,
    kbSigner: signerFor(HOLDER_KEY),
    kbSignAlg: 'EdDSA',
    // Used only for the library self-check below.
    verifier: async (data, sig) => (trustedJwk ? edVerify(trustedJwk, data, sig) : false),
    kbVerifier: async (data, sig, payload) => edVerify(payload.cnf.jwk, data, sig),
  });
}
const sdjwt = instance(ISSUER_KEY, ISSUER_KEY.jwk);

const FULL = { given_name: true, family_name: true, birthdate: true,
  address: { locality: true, street_address: true }, nationalities: { 0: true, 1: true } };
const PARTIAL = { given_name: true, address: { locality: true }, nationalities: { 1: true } };

async function issue({ key = ISSUER_KEY, kid = KID, iat = CRED_IAT, typ = 'dc+sd-jwt' } = {}) {
  const claims = {
    // In the clear: SD-JWT VC forbids making these selectively disclosable.
    iss: ISSUER, iat, nbf: iat, exp: iat + THREE_YEARS, vct: VCT,
    sub: '1012345678', jti: 'card-0001', cnf: { jwk: HOLDER_KEY.jwk },
    given_name: 'Erika', family_name: 'Mustermann', birthdate: '1984-01-26',
    // Raw UTF-8 here (JSON.stringify does not escape ß), unlike the Python side.
    address: { locality: 'Berlin', street_address: 'Heidestraße 17', country: 'DE' },
    nationalities: ['DE', 'FR'],
  };
  const frame = {
    _sd: ['given_name', 'family_name', 'birthdate'],
    _sd_decoy: 2, // verifier must ignore unmatched digests
    address: { _sd: ['locality', 'street_address'], _sd_decoy: 1 },
    nationalities: { _sd: [0, 1] }, // array-element disclosures
  };
  // typ defaults to "dc+sd-jwt" (SDJwtVcInstance); options.header overrides it.
  return instance(key).issue(claims, frame, { header: { typ, kid } });
}

const present = (cred, frame, nonce, iat = KB_IAT) =>
  sdjwt.present(cred, frame, { kb: { payload: { iat, aud: AUD, nonce } } });

// --- helpers for tampering with library output ------------------------------
const split = (p) => { const a = p.split('~'); return [a[0], a.slice(1, -1), a.at(-1)]; };
const sdHash = (prefix) => b64e(sha256(prefix));
const kbJwt = (prefix, nonce, hash = sdHash(prefix)) =>
  new KBJwt({ header: { typ: 'kb+jwt', alg: 'EdDSA' },
    payload: { iat: KB_IAT, aud: AUD, nonce, sd_hash: hash } }).sign(signerFor(HOLDER_KEY));
async function rebind(jwt, discs, nonce) {
  const prefix = [jwt, ...discs].join('~') + '~';
  return prefix + (await kbJwt(prefix, nonce));
}
const discName = (d) => { const a = JSON.parse(b64d(d)); return a.length === 3 ? a[1] : null; };

async function buildCases() {
  const cred = await issue();
  const cases = [];
  const n = (name) => `nonce-node-${name}`;
  const add = (name, expect, presentation) =>
    cases.push({ name, presentation, expect, at: AT, audience: AUD, nonce: n(name) });

  add('valid', 'valid', await present(cred, FULL, n('valid')));
  add('valid_partial', 'valid', await present(cred, PARTIAL, n('valid_partial')));
  add('valid_no_disclosures', 'valid', await present(cred, {}, n('valid_no_disclosures')));
  add('valid_typ_vc', 'valid', await present(await issue({ typ: 'vc+sd-jwt' }), FULL, n('valid_typ_vc')));

  { // Change a clear claim (sub) and keep the old issuer signature.
    const [jwt, discs] = split(await present(cred, FULL, n('payload_byte')));
    const [h, p, s] = jwt.split('.');
    const payload = JSON.parse(b64d(p));
    payload.sub = '1012345679';
    const forged = [h, b64e(JSON.stringify(payload)), s].join('.');
    add('payload_byte', 'bad_signature', await rebind(forged, discs, n('payload_byte')));
  }
  { // Swap the given_name disclosure for a well-formed one no digest references.
    const [jwt, discs] = split(await present(cred, FULL, n('disclosure_tampered')));
    const fake = b64e(JSON.stringify(['bm9kZXNhbHRub2Rlc2FsdA', 'given_name', 'Mallory']));
    const swapped = discs.map((d) => (discName(d) === 'given_name' ? fake : d));
    add('disclosure_tampered', 'disclosure_invalid', await rebind(jwt, swapped, n('disclosure_tampered')));
  }
  { // Correctly signed KB-JWT whose sd_hash covers one disclosure too few.
    const [jwt, discs] = split(await present(cred, FULL, n('kb_sd_hash')));
    const prefix = [jwt, ...discs].join('~') + '~';
    const wrong = sdHash([jwt, ...discs.slice(0, -1)].join('~') + '~');
    add('kb_sd_hash', 'key_binding_invalid', prefix + (await kbJwt(prefix, n('kb_sd_hash'), wrong)));
  }
  { // Flip one bit of the KB-JWT signature bytes.
    const pres = await present(cred, FULL, n('kb_signature'));
    const cut = pres.lastIndexOf('~') + 1;
    const [kh, kp, ks] = pres.slice(cut).split('.');
    const sig = b64d(ks);
    sig[0] ^= 0x01;
    add('kb_signature', 'key_binding_invalid', pres.slice(0, cut) + [kh, kp, b64e(sig)].join('.'));
  }
  add('wrong_key', 'bad_signature', await present(await issue({ key: ROGUE_KEY }), FULL, n('wrong_key')));
  // Signed by the genuine issuer key, but the kid is not in the JWKS.
  add('unknown_kid', 'unknown_key', await present(await issue({ kid: 'node-issuer-unknown' }), FULL, n('unknown_kid')));
  // exp = CRED_IAT - 1 day, i.e. ~10 days before `at`.
  add('expired', 'expired',
    await present(await issue({ iat: CRED_IAT - THREE_YEARS - 86_400 }), FULL, n('expired')));
  add('stale_iat', 'presentation_stale', await present(cred, FULL, n('stale_iat'), AT - 600));
  // No kb option: bearer copy ending in "~".
  add('bearer_no_kb', 'key_binding_missing', await sdjwt.present(cred, FULL));
  return cases;
}

// Library self-check: the library's own verifier must accept every "valid"
// case. Its verdict on negative cases is informational only: @sd-jwt 0.19.0
// does not check KB-JWT age (accepts stale_iat) and silently ignores a
// disclosure no digest references (accepts disclosure_tampered, which
// RFC 9901 section 7.1 says MUST be rejected).
async function libraryVerdict(c) {
  const kid = JSON.parse(b64d(c.presentation.split('.')[0])).kid;
  const v = instance(ISSUER_KEY, kid === KID ? ISSUER_KEY.jwk : null);
  try {
    await v.verify(c.presentation, { currentDate: c.at, keyBindingNonce: c.nonce });
    return 'accepted';
  } catch (e) {
    return `rejected (${e.message})`;
  }
}

async function main() {
  const out = process.argv[2];
  if (!out) { console.error('usage: node gen_node.mjs OUTDIR'); process.exit(2); }
  mkdirSync(out, { recursive: true });
  const cases = await buildCases();
  const jwks = { keys: [{ ...ISSUER_KEY.jwk, kid: KID, iss: ISSUER }] };
  writeFileSync(join(out, 'trust.jwks.json'), JSON.stringify(jwks, null, 2) + '\n');
  writeFileSync(join(out, 'cases.jsonl'), cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
  let bad = 0;
  for (const c of cases) {
    const verdict = await libraryVerdict(c);
    if (c.expect === 'valid' && verdict !== 'accepted') bad++;
    console.log(`${c.name.padEnd(22)} expect=${c.expect.padEnd(20)} @sd-jwt verify: ${verdict}`);
  }
  console.log(`wrote ${cases.length} cases to ${join(out, 'cases.jsonl')}`);
  if (bad) { console.error(`${bad} valid case(s) rejected by @sd-jwt itself`); process.exit(1); }
}

await main();
