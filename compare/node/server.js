// What a team would deploy instead of idgate (SPEC §11 lists "Node fastify + jose"): a fastify
// service that verifies the same SD-JWT presentations with jose, for the side-by-side figure in
// BENCHMARKS.md. It does what a JWT gateway does and no more: the issuer JWT's signature under the
// trusted key its `kid` names and its `exp`, then the KB-JWT's signature under the holder key in
// `cnf.jwk` — two Ed25519 signatures per presentation, the same two idgate verifies. No
// disclosures, revocation or replay checks (idgate does all three on top).
//
// Same request as idgate's `POST /v1/verify` (`{"presentations": [...]}`, bearer key), so one wrk
// script drives both. 200 when every presentation passes, 422 otherwise (wrk counts non-2xx).
//
//   PORT=8090 JWKS=trust.jwks.json API_KEY=... WORKERS=2 node server.js
import cluster from "node:cluster";
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";
import Fastify from "fastify";
import { compactVerify, decodeProtectedHeader, importJWK } from "jose";

const workers = Number(process.env.WORKERS || os.availableParallelism());

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("exit", (worker, code) => {
    console.error(`worker ${worker.process.pid} exited (${code})`);
    process.exit(1);
  });
} else {
  // A worker stops with its primary (the load generator kills the primary).
  process.on("disconnect", () => process.exit(0));
  const jwks = JSON.parse(readFileSync(process.env.JWKS, "utf8"));
  const issuerKeys = new Map();
  for (const jwk of jwks.keys) {
    issuerKeys.set(jwk.kid, await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, "EdDSA"));
  }
  const expected = createHash("sha256").update(`Bearer ${process.env.API_KEY}`).digest();
  const decoder = new TextDecoder();

  async function verifyPresentation(text) {
    const parts = text.split("~");
    const issuerJwt = parts[0];
    const kbJwt = parts[parts.length - 1];
    const { kid } = decodeProtectedHeader(issuerJwt);
    const issuerKey = issuerKeys.get(kid);
    if (!issuerKey) return "unknown_key";
    const issuer = await compactVerify(issuerJwt, issuerKey, { algorithms: ["EdDSA"] });
    const claims = JSON.parse(decoder.decode(issuer.payload));
    if (typeof claims.exp !== "number" || claims.exp <= Date.now() / 1000) return "expired";
    const jwk = claims.cnf && claims.cnf.jwk;
    if (!jwk) return "key_binding_invalid";
    const holderKey = await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, "EdDSA");
    await compactVerify(kbJwt, holderKey, { algorithms: ["EdDSA"] });
    return null;
  }

  const app = Fastify({ logger: false, bodyLimit: 8 << 20 });
  app.post("/v1/verify", async (request, reply) => {
    const given = createHash("sha256").update(request.headers.authorization || "").digest();
    if (!timingSafeEqual(given, expected)) return reply.code(401).send({ error: "unauthorized" });
    const presentations = request.body && request.body.presentations;
    if (!Array.isArray(presentations)) return reply.code(400).send({ error: "bad_request" });
    const results = await Promise.all(
      presentations.map(async (p) => {
        try {
          const error = await verifyPresentation(String(p));
          return error ? { valid: false, error } : { valid: true };
        } catch {
          return { valid: false, error: "bad_signature" };
        }
      }),
    );
    return reply.code(results.every((r) => r.valid) ? 200 : 422).send({ results });
  });
  app.get("/livez", async () => "ok\n");
  await app.listen({ host: "127.0.0.1", port: Number(process.env.PORT || 8090) });
}
