// A gateway's key resolution, written from MPCP key-resolution.md and PolicyGrant.md only
// (no appliance code): for each PolicyGrant file, derive the key set URL from `issuer`
// ("Deriving the URL from issuer"), GET it over HTTPS with TLS validated against the CA
// given, read the plain Key Set Document (`doc.keys`), find `kid == issuerKeyId`, refuse an
// `active: false` key (KEY_REVOKED), then verify the signature over
// SHA-256("MPCP:PolicyGrant:1.0:" || canonical_json(grant without signature)) with Node's
// crypto.verify(null, digest, key, signature), as the reference SDK does.
//
// Usage: node resolve_grants.mjs CA.pem GRANT.json... Prints one JSON line per grant:
// {"grant", "url", "status", "result"} where result is VALID or a stable code
// (KEY_SET_INVALID, KEY_NOT_FOUND, KEY_REVOKED, POLICY_GRANT_SIGNATURE_INVALID, FETCH_FAILED).
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";

// Canonical JSON: keys sorted recursively, no whitespace, null members omitted.
function canonicalJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  return `{${Object.keys(value)
    .sort()
    .filter((k) => value[k] !== null && value[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
    .join(",")}}`;
}

// key-resolution.md, "Deriving the URL from issuer".
function deriveKeySetUrl(issuer) {
  if (issuer.startsWith("did:web:")) {
    const [host, ...path] = issuer.slice("did:web:".length).split(":").map(decodeURIComponent);
    const prefix = path.length ? `/${path.join("/")}` : "";
    return `https://${host}${prefix}/.well-known/mpcp-keys.json`;
  }
  if (issuer.startsWith("https://")) {
    return `${issuer.replace(/\/+$/, "")}/.well-known/mpcp-keys.json`;
  }
  if (issuer.includes("://")) throw new Error(`issuer ${issuer}: only https is allowed`);
  return `https://${issuer}/.well-known/mpcp-keys.json`;
}

function get(url, ca) {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, headers: { accept: "application/json" } }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode, type: res.headers["content-type"], body: Buffer.concat(chunks) }),
        );
      })
      .on("error", reject);
  });
}

async function verifyGrant(file, ca) {
  const grant = JSON.parse(fs.readFileSync(file, "utf8"));
  const url = deriveKeySetUrl(grant.issuer);
  const out = { grant: grant.grantId, url };
  let res;
  try {
    res = await get(url, ca);
  } catch (e) {
    return { ...out, result: "FETCH_FAILED", error: String(e) };
  }
  out.status = res.status;
  if (res.status !== 200 || !String(res.type).startsWith("application/json")) {
    return { ...out, result: "FETCH_FAILED" };
  }
  let doc;
  try {
    doc = JSON.parse(res.body.toString("utf8"));
  } catch {
    return { ...out, result: "KEY_SET_INVALID" };
  }
  if (doc === null || typeof doc !== "object" || doc.version !== "1.0" || !Array.isArray(doc.keys)) {
    return { ...out, result: "KEY_SET_INVALID" };
  }
  const jwk = doc.keys.find((k) => k.kid === grant.issuerKeyId);
  if (!jwk) return { ...out, result: "KEY_NOT_FOUND" };
  if (jwk.active === false) return { ...out, result: "KEY_REVOKED" };
  if (jwk.use !== "sig" || jwk.d !== undefined) return { ...out, result: "KEY_SET_INVALID" };
  const { signature, ...unsigned } = grant;
  const digest = crypto
    .createHash("sha256")
    .update(`MPCP:PolicyGrant:${grant.version}:` + canonicalJson(unsigned))
    .digest();
  const { kid: _k, active: _a, use: _u, alg, ...material } = jwk;
  const key = crypto.createPublicKey({ key: material, format: "jwk" });
  const ok = crypto.verify(null, digest, key, Buffer.from(signature, "base64"));
  return { ...out, alg, result: ok ? "VALID" : "POLICY_GRANT_SIGNATURE_INVALID" };
}

const [caFile, ...grants] = process.argv.slice(2);
const ca = fs.readFileSync(caFile);
for (const g of grants) console.log(JSON.stringify(await verifyGrant(g, ca)));
