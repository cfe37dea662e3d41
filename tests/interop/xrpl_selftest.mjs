// Self-test of xrpl_check.mjs (not run by cargo): signs CredentialCreate transactions with
// ripple-keypairs (secp256k1 and ed25519), checks they pass, then flips single bytes of the blob
// (in the signature, in CredentialType, in Sequence) and checks every flip is caught: decode
// fails, the signature no longer verifies, or the blob is no longer canonical.
// Usage: node xrpl_selftest.mjs   (exit 1 on any failure)
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { encode, encodeForSigning } from "ripple-binary-codec";
import { deriveAddress, deriveKeypair, generateSeed, sign } from "ripple-keypairs";
import { checkBlob, txHash } from "./xrpl_check.mjs";

const RIPPLE_EPOCH = 946684800;
let failures = 0;
function expect(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures += 1;
}

/** A signed CredentialCreate from a fresh keypair of the given algorithm, and its blob. */
function signedCreate(algorithm) {
  const keys = deriveKeypair(generateSeed({ algorithm }));
  const subject = deriveAddress(deriveKeypair(generateSeed({ algorithm: "ed25519" })).publicKey);
  const tx = {
    TransactionType: "CredentialCreate",
    Account: deriveAddress(keys.publicKey),
    Subject: subject,
    CredentialType: Buffer.from("mpcp:active-grant:g-1").toString("hex").toUpperCase(),
    Expiration: Math.floor(Date.now() / 1000) - RIPPLE_EPOCH + 3600,
    Fee: "12",
    Sequence: 5,
    Flags: 0,
    SigningPubKey: keys.publicKey,
  };
  tx.TxnSignature = sign(encodeForSigning(tx), keys.privateKey);
  return { tx, blob: encode(tx) };
}

/** Flip one byte (XOR 0xFF) at a byte offset of a hex blob. */
function flip(blob, byteOffset) {
  const bytes = Buffer.from(blob, "hex");
  bytes[byteOffset] ^= 0xff;
  return bytes.toString("hex").toUpperCase();
}

/** Byte offset of a value's hex inside the blob (the value is unique in it). */
function offsetOf(blob, valueHex) {
  const at = blob.indexOf(valueHex.toUpperCase());
  if (at < 0 || at % 2 !== 0) throw new Error(`value ${valueHex} not found byte-aligned in blob`);
  return at / 2;
}

for (const algorithm of ["ecdsa-secp256k1", "ed25519"]) {
  const { tx, blob } = signedCreate(algorithm);
  const r = checkBlob(blob);
  expect(r.ok && r.signatureValid && r.accountMatchesKey && r.canonical, `${algorithm}: signed CredentialCreate is valid, canonical, account matches key`);
  expect(r.ok && r.tx.TransactionType === "CredentialCreate" && r.tx.CredentialType === tx.CredentialType, `${algorithm}: decoded fields round-trip`);
  expect(r.ok && r.hash === txHash(blob) && /^[0-9A-F]{64}$/.test(r.hash), `${algorithm}: hash is 64 uppercase hex`);
  expect(r.ok && r.signingPubKey === tx.SigningPubKey, `${algorithm}: signingPubKey reported`);

  // Positions to flip: first, middle and last byte of the signature; first and last byte of
  // CredentialType; the low byte of Sequence (field header 0x24 then the uint32 00000005).
  const sig = offsetOf(blob, tx.TxnSignature);
  const sigLen = tx.TxnSignature.length / 2;
  const ct = offsetOf(blob, tx.CredentialType);
  const ctLen = tx.CredentialType.length / 2;
  const seq = offsetOf(blob, "2400000005") + 4;
  const positions = {
    "signature first byte": sig,
    "signature middle byte": sig + Math.floor(sigLen / 2),
    "signature last byte": sig + sigLen - 1,
    "CredentialType first byte": ct,
    "CredentialType last byte": ct + ctLen - 1,
    "Sequence low byte": seq,
  };
  for (const [what, at] of Object.entries(positions)) {
    const f = checkBlob(flip(blob, at));
    const caught = !f.ok || !f.signatureValid || !f.canonical;
    const how = !f.ok ? `decode failed (${f.error})` : `signatureValid=${f.signatureValid} canonical=${f.canonical}`;
    expect(caught, `${algorithm}: flipped ${what} (byte ${at}) is caught: ${how}`);
  }
  // A wrong account for the key: re-sign with Account set to someone else's address.
  const other = { ...tx, Account: tx.Subject };
  delete other.TxnSignature;
  const forged = checkBlob(encode({ ...other, TxnSignature: tx.TxnSignature }));
  expect(forged.ok && !forged.accountMatchesKey && !forged.signatureValid, `${algorithm}: another Account is caught (accountMatchesKey=false)`);
}

// secp256k1: the same signature with S replaced by n - S (still a valid ECDSA signature) must be
// refused: rippled only accepts low-S ("fully canonical") signatures, so the HSM's ECDSA output
// has to be normalized before it goes into a blob, and the checker must catch it if it is not.
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
function derInt(bytes) {
  // Minimal big-endian two's-complement positive integer, as DER wants.
  let hex = bytes.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return `02${(hex.length / 2).toString(16).padStart(2, "0")}${hex}`;
}
function highS(derHex) {
  const der = Buffer.from(derHex, "hex");
  const rLen = der[3];
  const r = BigInt(`0x${der.subarray(4, 4 + rLen).toString("hex")}`);
  const sLen = der[5 + rLen];
  const s = BigInt(`0x${der.subarray(6 + rLen, 6 + rLen + sLen).toString("hex")}`);
  const body = derInt(r) + derInt(SECP256K1_N - s);
  return `30${(body.length / 2).toString(16).padStart(2, "0")}${body}`.toUpperCase();
}
{
  const { tx } = signedCreate("ecdsa-secp256k1");
  const r = checkBlob(encode({ ...tx, TxnSignature: highS(tx.TxnSignature) }));
  expect(r.ok && r.canonical && !r.signatureValid, "secp256k1: the high-S twin of a valid signature is refused");
  // A flipped VL length byte of the signature: the fields after it misparse.
  const blob = encode(tx);
  const lenAt = offsetOf(blob, tx.TxnSignature) - 1;
  const f = checkBlob(flip(blob, lenAt));
  expect(!f.ok || !f.signatureValid || !f.canonical, `secp256k1: flipped signature length byte is caught: ${f.ok ? `signatureValid=${f.signatureValid} canonical=${f.canonical}` : `decode failed (${f.error})`}`);
}

// The command-line mode and the stdin line mode of the script itself.
const script = fileURLToPath(new URL("./xrpl_check.mjs", import.meta.url));
const { blob } = signedCreate("ed25519");
const cli = spawnSync(process.execPath, [script, blob], { encoding: "utf8" });
const cliResult = cli.status === 0 ? JSON.parse(cli.stdout) : null;
expect(cli.status === 0 && cliResult.ok && cliResult.signatureValid && cliResult.canonical, "CLI mode: one blob, one result, exit 0");
const lines = spawnSync(process.execPath, [script], { encoding: "utf8", input: `{"blob":"${blob}"}\n{"blob":"00"}\nnot json\n` });
const out = lines.stdout.trim().split("\n").map((l) => JSON.parse(l));
expect(lines.status === 0 && out.length === 3 && out[0].ok && out[0].signatureValid && !out[1].ok && !out[2].ok, "stdin mode: one line per request, bad requests answered ok:false");

console.log(failures === 0 ? "xrpl_selftest: all passed" : `xrpl_selftest: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
