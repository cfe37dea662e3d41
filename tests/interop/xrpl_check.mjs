// Checks signed XRPL transaction blobs with the XRPL Foundation's own clients:
// ripple-binary-codec decodes and re-encodes them, ripple-keypairs verifies the signature and
// derives the account from the signing key. The appliance's Rust side writes these blobs itself
// (HSM signatures); this script is the independent judge the Rust tests ask.
//
// Usage:
//   node xrpl_check.mjs <hex-blob>   prints one JSON result line and exits 0
//   node xrpl_check.mjs              reads JSON lines {"blob": "<hex>"} on stdin and writes one
//                                    JSON result line per request on stdout, in order
// Result: {"ok": true, "tx": <decoded>, "hash": "<tx id>", "signatureValid": bool,
//          "accountMatchesKey": bool, "canonical": bool, "signingPubKey": "<hex>"|null}
//      or {"ok": false, "error": "..."} when the request or the blob cannot be decoded.
// Exit status is 0 whatever the verdicts: the caller reads the booleans.
//
// The module also exports checkBlob and txHash for the self-test and the rippled stand-in.
import crypto from "node:crypto";
import fs from "node:fs";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { decode, encode, encodeForSigning } from "ripple-binary-codec";
import { deriveAddress, verify } from "ripple-keypairs";

// HashPrefix::transactionID ("TXN\0"): a transaction's id is SHA-512-half of it and the blob.
const TXN_ID_PREFIX = Buffer.from("54584E00", "hex");

/** The transaction id rippled gives a signed blob: uppercase hex SHA-512-half of "TXN\0" || blob. */
export function txHash(blobHex) {
  const digest = crypto.createHash("sha512").update(TXN_ID_PREFIX).update(Buffer.from(blobHex, "hex")).digest();
  return digest.subarray(0, 32).toString("hex").toUpperCase();
}

/** ripple-keypairs.verify over encodeForSigning(tx without TxnSignature); any exception is false. */
export function signatureValid(tx) {
  try {
    if (typeof tx.TxnSignature !== "string" || typeof tx.SigningPubKey !== "string") return false;
    const { TxnSignature, ...unsigned } = tx;
    return verify(encodeForSigning(unsigned), TxnSignature, tx.SigningPubKey) === true;
  } catch {
    return false;
  }
}

/** deriveAddress(SigningPubKey) === Account; an underivable key is false. */
export function accountMatchesKey(tx) {
  try {
    return typeof tx.SigningPubKey === "string" && deriveAddress(tx.SigningPubKey) === tx.Account;
  } catch {
    return false;
  }
}

/** The full verdict on one hex blob (never throws). */
export function checkBlob(blob) {
  if (typeof blob !== "string" || blob.length === 0 || blob.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(blob)) {
    return { ok: false, error: "blob must be a non-empty, even-length hex string" };
  }
  let tx;
  try {
    tx = decode(blob);
  } catch (e) {
    return { ok: false, error: `decode failed: ${e.message}` };
  }
  // Canonical: the codec writes back exactly these bytes. A blob that decodes but is not what
  // encode produces (fields out of order, trailing bytes, non-canonical lengths) is not one
  // rippled would give this id to, so the Rust side must never produce it.
  let canonical = false;
  try {
    canonical = encode(tx).toUpperCase() === blob.toUpperCase();
  } catch {
    canonical = false;
  }
  return {
    ok: true,
    tx,
    hash: txHash(blob),
    signatureValid: signatureValid(tx),
    accountMatchesKey: accountMatchesKey(tx),
    canonical,
    signingPubKey: typeof tx.SigningPubKey === "string" ? tx.SigningPubKey : null,
  };
}

/** One stdin request line → one result (a line that is not {"blob": "..."} is an ok:false). */
function checkLine(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (e) {
    return { ok: false, error: `request is not JSON: ${e.message}` };
  }
  if (request === null || typeof request !== "object" || typeof request.blob !== "string") {
    return { ok: false, error: 'request must be {"blob": "<hex>"}' };
  }
  return checkBlob(request.blob);
}

async function main() {
  if (process.argv.length > 2) {
    process.stdout.write(`${JSON.stringify(checkBlob(process.argv[2]))}\n`);
    return;
  }
  // Line mode: the caller may keep this process open and send one blob at a time, so answer
  // each line as it arrives (blank lines are skipped, they are not requests).
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() === "") continue;
    process.stdout.write(`${JSON.stringify(checkLine(line))}\n`);
  }
}

// Run only when executed, not when imported (compare real paths: argv[1] may go through a symlink).
if (process.argv[1] && fs.realpathSync(fileURLToPath(import.meta.url)) === fs.realpathSync(process.argv[1])) {
  await main();
}
