// An independent checker of the receipt vectors (test-vectors/receipts), written from
// SEP-2828 and MCP PR #2867 with Node's built-in crypto only: its own RFC 8785 (JCS) for the
// values the vectors hold (objects, arrays, strings, integers, booleans, null), its own
// fallback projection, ES256 over raw r||s (ieee-p1363), and the verifier order. It must
// reach the manifest's verdict for every vector.
// Usage: node verify_receipts.mjs <test-vectors/receipts dir>. Exits 1 on any disagreement.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

// JCS: members sorted by UTF-16 code units (JS's default sort), JSON.stringify escaping.
function jcs(v) {
  if (v === null || typeof v !== "object") {
    if (typeof v === "number" && !Number.isInteger(v)) throw new Error("float in a canonical body");
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map(jcs).join(",")}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(",")}}`;
}
const sha256 = (s) => "sha256:" + crypto.createHash("sha256").update(s, "utf8").digest("hex");
const PROJECTION = "tools_call_params_plus_meta_authorization_binding_v1";
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function project(id, req) {
  if (id !== PROJECTION) return { error: "projection_unknown" };
  if (!isObj(req) || typeof req.name !== "string") return { error: "name_missing" };
  if (!isObj(req.arguments)) return { error: "arguments_missing" };
  if (req._meta === undefined) return { error: "binding_missing" };
  if (!isObj(req._meta)) return { error: "binding_malformed" };
  const b = req._meta.authorization_binding;
  if (b === undefined) return { error: "binding_missing" };
  if (!isObj(b) || typeof b.nonce !== "string" || b.nonce === "") return { error: "binding_malformed" };
  const pre = { projection: PROJECTION, name: req.name, arguments: req.arguments, authorizationBinding: b };
  return { digest: sha256(jcs(pre)), nonce: b.nonce };
}

const DECISION = ["version", "alg", "backLink", "decisionDerived", "issuerAsserted"];
const OUTCOME = ["version", "alg", "backLink", "outcomeDerived", "receiptAsserted"];
const CLOSED = {
  decision: ["version", "alg", "backLink", "decisionDerived", "issuerAsserted", "signature", "timestampAnchors"],
  outcome: ["version", "alg", "backLink", "outcomeDerived", "receiptAsserted", "signature", "timestampAnchors"],
  backLink: ["attestationDigest", "attestationNonce", "fallbackProjection"],
  decisionDerived: ["decision", "decidedAt", "reason", "policyId", "riskScore", "thresholdAllow", "thresholdBlock", "clientTurnId"],
  outcomeDerived: ["status", "completedAt", "resultCommitment", "decisionDigest"],
  asserted: ["iss", "sub", "iat", "nonce", "alg", "secretVersion", "aud", "expSeconds"],
};
const closed = (o, allowed) => isObj(o) && Object.keys(o).every((k) => allowed.includes(k));
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

function authentic(rec, members, block, keys) {
  if (!isObj(rec) || members.some((m) => !(m in rec)) || typeof rec.signature !== "string") return "malformed";
  const kid = isObj(rec[block]) ? rec[block].secretVersion : undefined;
  if (typeof kid !== "string") return "malformed";
  const jwk = keys.find((k) => k.kid === kid && k.active !== false);
  if (!jwk) return "unknown_key";
  if (!/^[0-9a-f]{128}$/.test(rec.signature)) return "signature_invalid";
  const payload = Object.fromEntries(members.map((m) => [m, rec[m]]));
  const key = crypto.createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: "jwk" });
  const ok = crypto.verify("sha256", Buffer.from(jcs(payload), "utf8"), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(rec.signature, "hex"));
  return ok ? null : "signature_invalid";
}

function common(rec, asserted) {
  if (rec.version !== 1 || !closed(asserted, CLOSED.asserted) || !TIME.test(asserted.iat)) return "schema_invalid";
  for (const f of ["iss", "sub", "nonce", "alg", "secretVersion"]) if (typeof asserted[f] !== "string") return "schema_invalid";
  if (!closed(rec.backLink, CLOSED.backLink) || !DIGEST.test(rec.backLink.attestationDigest) || typeof rec.backLink.attestationNonce !== "string" || rec.backLink.attestationNonce === "") return "schema_invalid";
  if (rec.alg !== "ES256") return "alg_unsupported";
  if (asserted.alg !== rec.alg) return "alg_mismatch";
  return null;
}

function checkDecision(d, keys, ex) {
  const a = authentic(d, DECISION, "issuerAsserted", keys);
  if (a) return a;
  if (!closed(d, CLOSED.decision) || !closed(d.decisionDerived, CLOSED.decisionDerived)) return "schema_invalid";
  if (!["allow", "block", "escalate"].includes(d.decisionDerived.decision) || !TIME.test(d.decisionDerived.decidedAt)) return "schema_invalid";
  const c = common(d, d.issuerAsserted);
  if (c) return c;
  const iat = Date.parse(d.issuerAsserted.iat);
  if (iat > ex.now + ex.skew) return "not_yet_valid";
  const life = Math.min(d.issuerAsserted.expSeconds ?? Infinity, ex.maxAge) * 1000;
  if (ex.now > iat + life) return "expired";
  if (d.issuerAsserted.aud !== ex.audience) return "wrong_audience";
  return null;
}

function checkOutcome(o, keys) {
  const a = authentic(o, OUTCOME, "receiptAsserted", keys);
  if (a) return a;
  if (!closed(o, CLOSED.outcome) || !closed(o.outcomeDerived, CLOSED.outcomeDerived)) return "schema_invalid";
  if (!["executed", "refused", "errored"].includes(o.outcomeDerived.status) || !TIME.test(o.outcomeDerived.completedAt)) return "schema_invalid";
  if ("expSeconds" in o.receiptAsserted) return "schema_invalid";
  return common(o, o.receiptAsserted);
}

function verdict(v, dir, keys) {
  const read = (rel) => JSON.parse(fs.readFileSync(path.join(dir, rel), "utf8"));
  const ex = { now: Date.parse(v.at), skew: 30000, maxAge: v.maxAgeSeconds, audience: v.audience };
  const decisions = v.decisions.map(read);
  for (const d of decisions) {
    const e = checkDecision(d, keys, ex);
    if (e) return e;
  }
  let i = 0;
  if (decisions.length > 1) {
    if (decisions.some((d) => jcs(d.backLink) !== jcs(decisions[0].backLink))) return "not_paired";
    const at = decisions.map((d) => Date.parse(d.decisionDerived.decidedAt));
    const latest = Math.max(...at);
    const winners = decisions.filter((_, j) => at[j] === latest);
    if (winners.some((w) => jcs(w) !== jcs(winners[0]))) return "ambiguous";
    i = at.indexOf(latest);
  }
  const d = decisions[i];
  if (v.outcome) {
    const o = read(v.outcome);
    const e = checkOutcome(o, keys);
    if (e) return e;
    if (jcs(o.backLink) !== jcs(d.backLink) || o.outcomeDerived.decisionDigest !== sha256(jcs(d))) return "not_paired";
  }
  if (v.request) {
    if (d.decisionDerived.decision !== "allow") return "denied";
    const p = project(d.backLink.fallbackProjection, read(v.request));
    if (p.error) return p.error;
    if (p.nonce !== d.backLink.attestationNonce) return "nonce_mismatch";
    if (p.digest !== d.backLink.attestationDigest) return "digest_mismatch";
  }
  return "valid";
}

const dir = process.argv[2];
const manifest = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));
const keys = JSON.parse(fs.readFileSync(path.join(dir, manifest.keys), "utf8")).keys;
let failures = 0;
for (const v of manifest.vectors) {
  const got = verdict(v, dir, keys);
  const ok = got === v.expect.verdict;
  if (!ok) failures++;
  console.log(`${ok ? "ok  " : "FAIL"} ${v.id}: ${got}${ok ? "" : ` (manifest: ${v.expect.verdict})`}`);
}
console.log(`${manifest.vectors.length - failures}/${manifest.vectors.length} verdicts reproduced`);
process.exit(failures ? 1 : 0);
