// Self-test of rippled_standin.mjs (not run by cargo): starts it as a child process, funds an
// account, submits signed CredentialCreate/Delete blobs (in order, with a gap, again, with a bad
// signature, and the engine results a submitter must handle), polls tx until validated, then
// SIGKILLs it, restarts it on the same state file and checks the ledger survived.
// Usage: node standin_selftest.mjs   (exit 1 on any failure)
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { decode, encode, encodeForSigning } from "ripple-binary-codec";
import { deriveAddress, deriveKeypair, generateSeed, sign } from "ripple-keypairs";

const SCRIPT = fileURLToPath(new URL("./rippled_standin.mjs", import.meta.url));
const RIPPLE_EPOCH = 946684800;
const hex = (s) => Buffer.from(s).toString("hex").toUpperCase();

let failures = 0;
function expect(cond, what, detail) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}${!cond && detail !== undefined ? `: ${JSON.stringify(detail)}` : ""}`);
  if (!cond) failures += 1;
}

/** Starts the stand-in and resolves once it printed "listening <port>". */
function start(stateFile) {
  const child = spawn(process.execPath, [SCRIPT, "--state", stateFile, "--port", "0", "--close-ms", "100", "--base-fee", "10"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stderr = [];
  child.stderr.on("data", (c) => stderr.push(c));
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("stand-in did not start")), 5000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = /^listening (\d+)$/.exec(line);
      if (!m) return reject(new Error(`unexpected first line: ${line}`));
      const extra = [];
      lines.on("line", (l) => extra.push(l)); // must stay empty: nothing else on stdout
      resolve({ child, port: Number(m[1]), stderr, extra });
    });
    child.once("exit", (code) => reject(new Error(`stand-in exited ${code}: ${Buffer.concat(stderr)}`)));
  });
}

function stop(child, signal) {
  return new Promise((resolve) => {
    child.once("exit", (code, sig) => resolve({ code, sig }));
    child.kill(signal);
  });
}

async function rpc(port, method, params = {}) {
  const res = await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: JSON.stringify({ method, params: [params] }) });
  if (res.status !== 200) return { httpStatus: res.status };
  return (await res.json()).result;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitValidated(port, hash) {
  for (let i = 0; i < 50; i += 1) {
    const r = await rpc(port, "tx", { transaction: hash });
    if (r.validated) return r;
    await sleep(50);
  }
  return rpc(port, "tx", { transaction: hash });
}

function signed(keys, fields) {
  const tx = { Fee: "12", Flags: 0, ...fields, Account: fields.Account ?? deriveAddress(keys.publicKey), SigningPubKey: keys.publicKey };
  tx.TxnSignature = sign(encodeForSigning(tx), keys.privateKey);
  return encode(tx);
}

const issuerKeys = deriveKeypair(generateSeed({ algorithm: "ecdsa-secp256k1" }));
const issuer = deriveAddress(issuerKeys.publicKey);
const subject = deriveAddress(deriveKeypair(generateSeed({ algorithm: "ed25519" })).publicKey);
const strangerKeys = deriveKeypair(generateSeed({ algorithm: "ed25519" }));
const nowRipple = () => Math.floor(Date.now() / 1000) - RIPPLE_EPOCH;
const create = (sequence, grant, extra = {}) =>
  signed(issuerKeys, { TransactionType: "CredentialCreate", Subject: subject, CredentialType: hex(`mpcp:active-grant:${grant}`), Expiration: nowRipple() + 3600, Sequence: sequence, ...extra });
const del = (sequence, grant, extra = {}) =>
  signed(issuerKeys, { TransactionType: "CredentialDelete", Subject: subject, CredentialType: hex(`mpcp:active-grant:${grant}`), Sequence: sequence, ...extra });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "standin-selftest-"));
const stateFile = path.join(dir, "state.json");
let s = await start(stateFile);
try {
  const lc = await rpc(s.port, "ledger_current");
  expect(lc.status === "success" && lc.ledger_current_index >= 1000, "ledger_current starts at 1000 and counts up", lc);
  const fee = await rpc(s.port, "fee");
  expect(fee.drops.base_fee === "10" && fee.drops.open_ledger_fee === "10", "fee answers the base fee in drops", fee);
  const none = await rpc(s.port, "account_info", { account: issuer });
  expect(none.status === "error" && none.error === "actNotFound" && none.request.command === "account_info", "account_info of an unfunded account is actNotFound", none);
  expect((await rpc(s.port, "submit", { tx_blob: create(1, "g-0") })).engine_result === "terNO_ACCOUNT", "submit from an unfunded account is terNO_ACCOUNT");

  await rpc(s.port, "standin_fund", { account: issuer, balance: "1000000", sequence: 1 });
  const info = await rpc(s.port, "account_info", { account: issuer, ledger_index: "current" });
  expect(info.account_data.Sequence === 1 && info.account_data.Balance === "1000000", "standin_fund then account_info", info);

  // In order: 1, 2 are applied.
  const b1 = create(1, "g-1");
  const r1 = await rpc(s.port, "submit", { tx_blob: b1 });
  expect(r1.engine_result === "tesSUCCESS" && r1.engine_result_code === 0 && r1.applied && r1.accepted && !r1.queued, "sequence 1: tesSUCCESS, applied", r1);
  expect(r1.tx_json.TransactionType === "CredentialCreate" && /^[0-9A-F]{64}$/.test(r1.tx_json.hash), "submit echoes tx_json with its hash", r1.tx_json);
  const r2 = await rpc(s.port, "submit", { tx_blob: create(2, "g-2") });
  expect(r2.engine_result === "tesSUCCESS", "sequence 2: tesSUCCESS", r2);
  // A gap: 4 before 3 is terPRE_SEQ and not kept.
  const r4 = await rpc(s.port, "submit", { tx_blob: create(4, "g-4") });
  expect(r4.engine_result === "terPRE_SEQ" && r4.engine_result_code === -92 && !r4.applied && !r4.kept, "sequence 4 with 3 missing: terPRE_SEQ, not kept", r4);
  // The same blob again: its sequence is consumed.
  const again = await rpc(s.port, "submit", { tx_blob: b1 });
  expect(again.engine_result === "tefPAST_SEQ" && again.engine_result_code === -190 && !again.applied, "blob 1 again: tefPAST_SEQ", again);
  // A bad signature: one byte of the signature flipped.
  const b3 = Buffer.from(del(3, "g-missing"), "hex");
  const sigAt = b3.indexOf(Buffer.from(decode(b3.toString("hex")).TxnSignature, "hex"));
  const bad = Buffer.from(b3);
  bad[sigAt + 10] ^= 0x01;
  const rb = await rpc(s.port, "submit", { tx_blob: bad.toString("hex") });
  expect(rb.status === "error" && rb.error === "invalidTransaction" && rb.error_exception === "fails local checks: Invalid signature.", "bad signature: error invalidTransaction, fails local checks", rb);
  // A key that is not the Account's.
  const forged = await rpc(s.port, "submit", { tx_blob: signed(strangerKeys, { TransactionType: "CredentialDelete", Account: issuer, Subject: subject, CredentialType: hex("x"), Sequence: 3 }) });
  expect(forged.error === "invalidTransaction", "SigningPubKey not the Account's: invalidTransaction", forged);
  // Refusals that do not consume the sequence.
  expect((await rpc(s.port, "submit", { tx_blob: del(3, "g-1", { Fee: "9" }) })).engine_result === "telINSUF_FEE_P", "fee below base: telINSUF_FEE_P");
  const lls = await rpc(s.port, "submit", { tx_blob: del(3, "g-1", { LastLedgerSequence: 999 }) });
  expect(lls.engine_result === "tefMAX_LEDGER" && lls.engine_result_code === -187, "LastLedgerSequence passed: tefMAX_LEDGER", lls);
  expect((await rpc(s.port, "submit", { tx_blob: signed(issuerKeys, { TransactionType: "AccountSet", Sequence: 3 }) })).engine_result === "temDISABLED", "not a Credential transaction: temDISABLED");
  expect((await rpc(s.port, "submit", { tx_blob: signed(issuerKeys, { TransactionType: "CredentialDelete", CredentialType: hex("x"), Sequence: 3 }) })).engine_result === "temMALFORMED", "Delete without Subject or Issuer: temMALFORMED");

  // A Delete of a missing credential: tec, still applied (sequence 3), validated at the close.
  const r3 = await rpc(s.port, "submit", { tx_blob: b3.toString("hex") });
  expect(r3.engine_result === "tecNO_ENTRY" && r3.applied, "Delete of a missing credential: tecNO_ENTRY, applied", r3);
  const t3 = await waitValidated(s.port, r3.tx_json.hash);
  expect(t3.validated && t3.meta.TransactionResult === "tecNO_ENTRY" && t3.ledger_index >= 1000 && t3.hash === r3.tx_json.hash, "tx: Delete validated with tecNO_ENTRY", t3);
  const t1 = await waitValidated(s.port, r1.tx_json.hash);
  expect(t1.validated && t1.meta.TransactionResult === "tesSUCCESS" && t1.Sequence === 1, "tx: sequence 1 validated with tesSUCCESS", t1);
  const unknown = await rpc(s.port, "tx", { transaction: "00".repeat(32) });
  expect(unknown.error === "txnNotFound" && unknown.error_code === 29, "tx of an unknown hash: txnNotFound", unknown);

  // Ledger results: a duplicate Create, an expired Create, a Delete of an existing credential.
  const dup = await rpc(s.port, "submit", { tx_blob: create(4, "g-1") });
  expect(dup.engine_result === "tecDUPLICATE", "Create of an existing credential: tecDUPLICATE", dup);
  const expired = await rpc(s.port, "submit", { tx_blob: create(5, "g-5", { Expiration: nowRipple() - 10 }) });
  expect(expired.engine_result === "tecEXPIRED", "Create with a past Expiration: tecEXPIRED", expired);
  const gone = await rpc(s.port, "submit", { tx_blob: del(6, "g-2") });
  expect(gone.engine_result === "tesSUCCESS", "Delete of an existing credential: tesSUCCESS", gone);
  await waitValidated(s.port, gone.tx_json.hash);

  // Another tool used the account: the next blob the submitter signed is now in the past.
  await rpc(s.port, "standin_set_sequence", { account: issuer, sequence: 10 });
  expect((await rpc(s.port, "submit", { tx_blob: create(7, "g-7") })).engine_result === "tefPAST_SEQ", "after standin_set_sequence 10, sequence 7: tefPAST_SEQ");

  // The endpoint down without killing it.
  await rpc(s.port, "standin_pause", { ms: 300 });
  expect((await rpc(s.port, "ledger_current")).httpStatus === 503, "standin_pause: HTTP 503 while paused");
  await sleep(350);
  expect((await rpc(s.port, "ledger_current")).status === "success", "standin_pause: answers again afterwards");

  const st = await rpc(s.port, "standin_state");
  const appliedHashes = [r1, r2, r3, dup, expired, gone].map((r) => r.tx_json.hash);
  expect(JSON.stringify(st.applied) === JSON.stringify(appliedHashes), "standin_state: applied in order, each once", st.applied);
  expect(st.submissions.find((x) => x.hash === r1.tx_json.hash)?.count === 2, "standin_state: blob 1 counted twice", st.submissions);
  const types = st.credentials.map((c) => Buffer.from(c.credentialType, "hex").toString());
  expect(types.length === 1 && types[0] === "mpcp:active-grant:g-1" && st.credentials[0].issuer === issuer && st.credentials[0].subject === subject, "standin_state: one credential left (g-1)", st.credentials);
  expect(st.accounts[0].Balance === String(1000000 - 6 * 12), "standin_state: the fee of each applied tx spent", st.accounts);
  expect(s.extra.length === 0, "nothing on stdout after 'listening'", s.extra);
  expect(Buffer.concat(s.stderr).toString().includes("submit tesSUCCESS"), "one stderr line per request");

  // SIGKILL, restart on the same state file: the ledger is still there.
  const ledgerBefore = (await rpc(s.port, "ledger_current")).ledger_current_index;
  const killed = await stop(s.child, "SIGKILL");
  expect(killed.sig === "SIGKILL", "stand-in killed with SIGKILL");
  s = await start(stateFile);
  const st2 = await rpc(s.port, "standin_state");
  expect(JSON.stringify(st2.applied) === JSON.stringify(st.applied) && JSON.stringify(st2.credentials) === JSON.stringify(st.credentials), "after restart: applied and credentials kept", st2);
  expect(JSON.stringify(st2.accounts) === JSON.stringify(st.accounts), "after restart: accounts kept", st2.accounts);
  expect(st2.ledger_current_index >= ledgerBefore, "after restart: ledger index did not go back", [ledgerBefore, st2.ledger_current_index]);
  const t1b = await rpc(s.port, "tx", { transaction: r1.tx_json.hash });
  expect(t1b.validated && t1b.meta.TransactionResult === "tesSUCCESS", "after restart: tx still validated", t1b);
  expect((await rpc(s.port, "submit", { tx_blob: b1 })).engine_result === "tefPAST_SEQ", "after restart: blob 1 again is still tefPAST_SEQ");
  expect((await rpc(s.port, "submit", { tx_blob: create(10, "g-10") })).engine_result === "tesSUCCESS", "after restart: the next sequence applies");
} finally {
  await stop(s.child, "SIGTERM");
  fs.rmSync(dir, { recursive: true, force: true });
}

console.log(failures === 0 ? "standin_selftest: all passed" : `standin_selftest: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
