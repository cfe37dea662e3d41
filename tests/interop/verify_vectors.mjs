// Verifies the project's L2 vectors the way the MPCP reference SDK does (Node's built-in
// crypto: crypto.verify(null, digest, publicKey, signature)), with an independent JavaScript
// canonicalJson (the reference SDK's rules: sorted keys, null members omitted).
// Usage: node verify_vectors.mjs <test-vectors/l2 dir>. Prints one line per vector and exits 1
// on any disagreement with the manifest's signedDigest / signatureValid.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

function canonicalJson(value) {
  if (value === undefined) throw new Error("Cannot canonicalize undefined");
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys
    .filter((k) => value[k] !== undefined && value[k] !== null)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
    .join(",")}}`;
}

const dir = process.argv[2];
const read = (rel) => JSON.parse(fs.readFileSync(path.join(dir, rel), "utf8"));
const manifest = read("manifest.json");
const published = [...read("keys/jwks.json").keys, ...read("keys/root-jwks.json").keys];

let failures = 0;
let checked = 0;
for (const v of manifest.vectors) {
  if (v.signatureValid === undefined) continue;
  const artifact = read(v.artifact);
  const { signature, ...unsigned } = artifact;
  const digest = crypto.createHash("sha256").update(v.domainPrefix + canonicalJson(unsigned)).digest();
  if (digest.toString("hex") !== v.signedDigest) {
    console.log(`FAIL ${v.id}: digest ${digest.toString("hex")} != manifest ${v.signedDigest}`);
    failures++;
    continue;
  }
  const kid = artifact.issuerKeyId ?? artifact.bundleKeyId ?? artifact.signerKeyId;
  const jwk = published.find((k) => k.kid === kid);
  let ok = false;
  if (jwk) {
    const { kid: _k, active: _a, use: _u, alg: _alg, ...material } = jwk;
    const key = crypto.createPublicKey({ key: material, format: "jwk" });
    ok = crypto.verify(null, digest, key, Buffer.from(signature, "base64"));
  }
  const agree = ok === v.signatureValid;
  if (!agree) failures++;
  checked++;
  console.log(`${agree ? "ok  " : "FAIL"} ${v.id}: node verify=${ok} manifest signatureValid=${v.signatureValid}`);
}
console.log(`${checked} vectors checked with node ${process.version}, ${failures} disagreements`);
process.exit(failures === 0 && checked > 0 ? 0 : 1);
