// A stand-in for rippled's JSON-RPC, for testing the appliance's XRPL submitter where no ledger
// can run. It is transport only (no consensus, no real ledger), but strict where a submitter can
// go wrong: every blob is decoded by ripple-binary-codec and its signature verified by
// ripple-keypairs, sequences are enforced per account, a blob is applied at most once, and the
// state survives a SIGKILL (written to a temp file and renamed after every change).
//
// Usage: node rippled_standin.mjs --state <file.json> [--port N] [--close-ms 200] [--base-fee 10]
//   Listens on 127.0.0.1:N (0 = ephemeral), plain HTTP; prints exactly "listening <port>" on
//   stdout once ready and nothing else on stdout afterwards. One line per request on stderr.
//   SIGTERM/SIGINT exit 0 (the state is already on disk).
//
// Protocol: POST / with {"method": "...", "params": [{...}]}; answers {"result": {..., "status":
// "success"}} or rippled's error shape {"result": {"error", "error_code"?, "error_message",
// "status": "error", "request"}}. Methods: account_info, fee, ledger_current, server_info,
// submit, tx, and the test-only standin_fund, standin_set_sequence, standin_state, standin_pause.
// The ledger: the open ledger starts at 1000 and closes every --close-ms (validated = open - 1);
// transactions applied to the open ledger get their final result when it closes.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";
import { coreTypes, decode } from "ripple-binary-codec";
import { accountMatchesKey, signatureValid, txHash } from "./xrpl_check.mjs";

// Result codes come from the codec's own table (the same numbers rippled sends).
const TER = createRequire(import.meta.url)("ripple-binary-codec/dist/enums/definitions.json").TRANSACTION_RESULTS;
// rippled's transResultInfo human texts for the results this stand-in gives.
const TER_MESSAGE = {
  tesSUCCESS: "The transaction was applied. Only final in a validated ledger.",
  tefPAST_SEQ: "This sequence number has already passed.",
  tefMAX_LEDGER: "Ledger sequence too high.",
  terPRE_SEQ: "Missing/inapplicable prior transaction.",
  terNO_ACCOUNT: "The source account does not exist.",
  terINSUF_FEE_B: "Account balance can't pay fee.",
  telINSUF_FEE_P: "Fee insufficient.",
  temDISABLED: "The transaction requires logic that is currently disabled.",
  temMALFORMED: "Malformed transaction.",
  temBAD_FEE: "Invalid fee, negative or not XRP.",
  tecDUPLICATE: "Ledger object already exists.",
  tecEXPIRED: "Expiration time is passed.",
  tecNO_ENTRY: "No matching entry found.",
  tecNO_PERMISSION: "No permission to perform requested operation.",
};
// rippled's RPC error codes (ErrorCodes.h) and texts for the errors this stand-in gives.
const RPC_ERROR = {
  actNotFound: [19, "Account not found."],
  txnNotFound: [29, "Transaction not found."],
  invalidParams: [31, "Invalid parameters."],
  unknownCmd: [32, "Unknown method."],
  actMalformed: [35, "Account malformed."],
  missingCommand: [47, "Missing command entry."],
};
const RIPPLE_EPOCH = 946684800; // 2000-01-01T00:00:00Z in unix seconds
const rippleNow = () => Math.floor(Date.now() / 1000) - RIPPLE_EPOCH;

// ---- arguments ----
function parseArgs(argv) {
  const opts = { state: null, port: 0, closeMs: 200, baseFee: 10n };
  for (let i = 0; i < argv.length; i += 1) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case "--state": opts.state = value; i += 1; break;
      case "--port": opts.port = Number(value); i += 1; break;
      case "--close-ms": opts.closeMs = Number(value); i += 1; break;
      case "--base-fee": opts.baseFee = BigInt(value); i += 1; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.state) throw new Error("--state <file.json> is required");
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error("--port must be 0..65535");
  if (!Number.isFinite(opts.closeMs) || opts.closeMs <= 0) throw new Error("--close-ms must be > 0");
  return opts;
}
let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`rippled_standin: ${e.message}\nusage: node rippled_standin.mjs --state <file.json> [--port N] [--close-ms 200] [--base-fee 10]\n`);
  process.exit(2);
}

// ---- state (loaded at start, persisted after every change) ----
// accounts: address → {Account, Balance (drops string), Sequence}
// credentials: [{issuer, subject, credentialType, expiration?}] (the validated ledger's)
// txs: hash → {tx_blob, tx_json, engine_result (at submit), ledger_index?, validated, result?, date?}
//      (only transactions that were applied, i.e. consumed their sequence)
// pending: hashes applied to the open ledger, in order, awaiting the next close
// submissions: [{hash, engine_result (first answer), count, results (every answer)}]
// applied: hashes in the order they consumed their sequence
function freshState() {
  return { ledgerCurrentIndex: 1000, accounts: {}, credentials: [], txs: {}, pending: [], submissions: [], applied: [] };
}
const state = fs.existsSync(opts.state) ? JSON.parse(fs.readFileSync(opts.state, "utf8")) : freshState();

function persist() {
  // Temp file + fsync + rename: a SIGKILL at any point leaves either the old or the new state.
  const tmp = `${opts.state}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, JSON.stringify(state));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, opts.state);
}
fs.mkdirSync(path.dirname(path.resolve(opts.state)), { recursive: true });
persist();

function recordSubmission(hash, answer) {
  let s = state.submissions.find((x) => x.hash === hash);
  if (!s) {
    s = { hash, engine_result: answer, count: 0, results: [] };
    state.submissions.push(s);
  }
  s.count += 1;
  s.results.push(answer);
}

// ---- credentials (XLS-70) ----
const sameCredential = (c, issuer, subject, credentialType) =>
  c.issuer === issuer && c.subject === subject && c.credentialType === credentialType;

/**
 * The result of a CredentialCreate/Delete against a credential list, and the list after it
 * (tec results change nothing but still consume the sequence, as in rippled).
 */
function evaluate(tx, credentials, now) {
  const credentialType = tx.CredentialType.toUpperCase();
  if (tx.TransactionType === "CredentialCreate") {
    const issuer = tx.Account;
    if (credentials.some((c) => sameCredential(c, issuer, tx.Subject, credentialType))) return { result: "tecDUPLICATE", credentials };
    if (tx.Expiration !== undefined && tx.Expiration < now) return { result: "tecEXPIRED", credentials };
    const c = { issuer, subject: tx.Subject, credentialType };
    if (tx.Expiration !== undefined) c.expiration = tx.Expiration;
    return { result: "tesSUCCESS", credentials: [...credentials, c] };
  }
  // CredentialDelete: a missing Subject or Issuer is the sender itself.
  const issuer = tx.Issuer ?? tx.Account;
  const subject = tx.Subject ?? tx.Account;
  const found = credentials.find((c) => sameCredential(c, issuer, subject, credentialType));
  if (!found) return { result: "tecNO_ENTRY", credentials };
  // Only the issuer or the subject may delete a credential that has not expired.
  const expired = found.expiration !== undefined && found.expiration < now;
  if (tx.Account !== issuer && tx.Account !== subject && !expired) return { result: "tecNO_PERMISSION", credentials };
  return { result: "tesSUCCESS", credentials: credentials.filter((c) => c !== found) };
}

/** The open ledger's credentials: the validated ones with the pending transactions applied in order. */
function openCredentials(now) {
  let credentials = state.credentials;
  for (const hash of state.pending) credentials = evaluate(state.txs[hash].tx_json, credentials, now).credentials;
  return credentials;
}

/** Closes the open ledger: its transactions get their final result in order, then it is validated. */
function closeLedger() {
  const closing = state.ledgerCurrentIndex;
  const now = rippleNow();
  for (const hash of state.pending) {
    const entry = state.txs[hash];
    const { result, credentials } = evaluate(entry.tx_json, state.credentials, now);
    state.credentials = credentials;
    Object.assign(entry, { validated: true, ledger_index: closing, result, date: now });
  }
  state.pending = [];
  state.ledgerCurrentIndex = closing + 1;
  persist();
}

// ---- validation of a submitted transaction (preflight: its own fields only) ----
const isAddress = (a) => {
  if (typeof a !== "string" || !a.startsWith("r")) return false;
  try {
    coreTypes.AccountID.from(a);
    return true;
  } catch {
    return false;
  }
};
const isUInt32 = (n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** null when well formed, else the tem code. */
function preflight(tx) {
  if (tx.TransactionType !== "CredentialCreate" && tx.TransactionType !== "CredentialDelete") return "temDISABLED";
  if (typeof tx.Fee !== "string" || !/^\d+$/.test(tx.Fee)) return "temBAD_FEE";
  if (!isUInt32(tx.Sequence)) return "temMALFORMED";
  const ct = tx.CredentialType;
  if (typeof ct !== "string" || !/^([0-9A-Fa-f]{2}){1,64}$/.test(ct)) return "temMALFORMED";
  if (tx.LastLedgerSequence !== undefined && !isUInt32(tx.LastLedgerSequence)) return "temMALFORMED";
  if (tx.TransactionType === "CredentialCreate") {
    if (!isAddress(tx.Subject)) return "temMALFORMED";
    if (tx.Expiration !== undefined && !isUInt32(tx.Expiration)) return "temMALFORMED";
  } else {
    if (tx.Subject === undefined && tx.Issuer === undefined) return "temMALFORMED";
    if (tx.Subject !== undefined && !isAddress(tx.Subject)) return "temMALFORMED";
    if (tx.Issuer !== undefined && !isAddress(tx.Issuer)) return "temMALFORMED";
  }
  return null;
}

// ---- JSON-RPC ----
class RpcError extends Error {
  constructor(error, message, extra = {}) {
    super(message ?? RPC_ERROR[error]?.[1] ?? error);
    this.error = error;
    this.extra = extra;
  }
}
const param = (p, name) => {
  if (p[name] === undefined) throw new RpcError("invalidParams", `Missing field '${name}'.`);
  return p[name];
};
function accountParam(p, name) {
  const a = param(p, name);
  if (!isAddress(a)) throw new RpcError("actMalformed");
  return a;
}
const ownerCount = (account) => state.credentials.filter((c) => c.issuer === account).length;
const withHash = (entry, hash) => ({ ...entry.tx_json, hash });

/** Every method answers a result object (status added by the caller) or throws an RpcError. */
const methods = {
  account_info(p) {
    // ledger_index is accepted and ignored: the answer is always the open ledger's.
    const account = accountParam(p, "account");
    const a = state.accounts[account];
    if (!a) throw new RpcError("actNotFound", undefined, { account, ledger_current_index: state.ledgerCurrentIndex, validated: false });
    return {
      account_data: { Account: a.Account, Balance: a.Balance, Flags: 0, LedgerEntryType: "AccountRoot", OwnerCount: ownerCount(account), Sequence: a.Sequence },
      ledger_current_index: state.ledgerCurrentIndex,
      validated: false,
    };
  },

  fee() {
    const base = opts.baseFee.toString();
    return {
      current_ledger_size: "0",
      current_queue_size: "0",
      drops: { base_fee: base, median_fee: "5000", minimum_fee: base, open_ledger_fee: base },
      expected_ledger_size: "1000",
      ledger_current_index: state.ledgerCurrentIndex,
      levels: { median_level: "128000", minimum_level: "256", open_ledger_level: "256", reference_level: "256" },
      max_queue_size: "2000",
    };
  },

  ledger_current() {
    return { ledger_current_index: state.ledgerCurrentIndex };
  },

  server_info() {
    const validated = state.ledgerCurrentIndex - 1;
    return {
      info: {
        build_version: "mpcp-rippled-standin",
        complete_ledgers: `1000-${validated}`,
        server_state: "full",
        load_factor: 1,
        validated_ledger: { seq: validated, base_fee_xrp: Number(opts.baseFee) / 1e6, reserve_base_xrp: 1, reserve_inc_xrp: 0.2 },
      },
    };
  },

  submit(p) {
    const blob = param(p, "tx_blob");
    if (typeof blob !== "string" || blob.length === 0 || blob.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(blob)) {
      throw new RpcError("invalidParams", "Invalid field 'tx_blob'.");
    }
    const hash = txHash(blob);
    const invalid = (why) => {
      recordSubmission(hash, "invalidTransaction");
      persist();
      // rippled's own form: error "invalidTransaction" with the reason in error_exception.
      return new RpcError("invalidTransaction", why, { error_exception: why });
    };
    let tx;
    try {
      tx = decode(blob);
    } catch (e) {
      throw invalid(`fails local checks: could not decode tx_blob: ${e.message}`);
    }
    const txJson = { ...tx, hash };
    const answer = (engineResult, flags) => {
      recordSubmission(hash, engineResult);
      persist();
      const a = state.accounts[tx.Account];
      return {
        accepted: flags.applied,
        account_sequence_available: a?.Sequence,
        account_sequence_next: a?.Sequence,
        applied: flags.applied,
        broadcast: flags.applied,
        engine_result: engineResult,
        engine_result_code: TER[engineResult],
        engine_result_message: TER_MESSAGE[engineResult],
        kept: flags.applied,
        open_ledger_cost: opts.baseFee.toString(),
        queued: false,
        tx_blob: blob.toUpperCase(),
        tx_json: txJson,
        validated_ledger_index: state.ledgerCurrentIndex - 1,
      };
    };
    const refuse = (engineResult) => answer(engineResult, { applied: false });

    // A blob already applied is never applied again; its sequence is consumed, so rippled says so.
    if (state.txs[hash]) return refuse("tefPAST_SEQ");
    // Local checks, as rippled does before anything else.
    if (!signatureValid(tx)) throw invalid("fails local checks: Invalid signature.");
    if (!accountMatchesKey(tx)) throw invalid("fails local checks: Account does not match SigningPubKey.");
    const tem = preflight(tx);
    if (tem) return refuse(tem);
    // Against the open ledger (rippled's preclaim order: account, sequence, last ledger, fee).
    const account = state.accounts[tx.Account];
    if (!account) return refuse("terNO_ACCOUNT");
    if (tx.Sequence < account.Sequence) return refuse("tefPAST_SEQ");
    if (tx.Sequence > account.Sequence) return refuse("terPRE_SEQ"); // a gap: not held here
    if (tx.LastLedgerSequence !== undefined && tx.LastLedgerSequence < state.ledgerCurrentIndex) return refuse("tefMAX_LEDGER");
    const fee = BigInt(tx.Fee);
    if (fee < opts.baseFee) return refuse("telINSUF_FEE_P");
    if (BigInt(account.Balance) < fee) return refuse("terINSUF_FEE_B");

    // Applied to the open ledger: the sequence and the fee are spent whatever the final result.
    const now = rippleNow();
    const { result } = evaluate(tx, openCredentials(now), now);
    account.Sequence += 1;
    account.Balance = (BigInt(account.Balance) - fee).toString();
    state.txs[hash] = { tx_blob: blob.toUpperCase(), tx_json: tx, engine_result: result, validated: false };
    state.pending.push(hash);
    state.applied.push(hash);
    return answer(result, { applied: true });
  },

  tx(p) {
    const hash = String(param(p, "transaction")).toUpperCase();
    const entry = state.txs[hash];
    if (!entry) throw new RpcError("txnNotFound");
    const out = { ...withHash(entry, hash), validated: entry.validated };
    // ledger_index, date and meta exist once the transaction's ledger has closed.
    if (entry.validated) Object.assign(out, { ledger_index: entry.ledger_index, date: entry.date, meta: { TransactionResult: entry.result } });
    return out;
  },

  // ---- test-only ----
  standin_fund(p) {
    const account = accountParam(p, "account");
    const balance = String(p.balance ?? "100000000000");
    if (!/^\d+$/.test(balance)) throw new RpcError("invalidParams", "Invalid field 'balance'.");
    const existing = state.accounts[account];
    const sequence = p.sequence ?? existing?.Sequence ?? 1;
    if (!isUInt32(sequence)) throw new RpcError("invalidParams", "Invalid field 'sequence'.");
    state.accounts[account] = { Account: account, Balance: balance, Sequence: sequence };
    persist();
    return { account_data: state.accounts[account] };
  },

  standin_set_sequence(p) {
    // Another tool used the account: its sequence moved without us.
    const account = accountParam(p, "account");
    const sequence = param(p, "sequence");
    if (!isUInt32(sequence)) throw new RpcError("invalidParams", "Invalid field 'sequence'.");
    if (!state.accounts[account]) throw new RpcError("actNotFound");
    state.accounts[account].Sequence = sequence;
    persist();
    return { account_data: state.accounts[account] };
  },

  standin_state() {
    return {
      ledger_current_index: state.ledgerCurrentIndex,
      accounts: Object.values(state.accounts),
      credentials: state.credentials,
      submissions: state.submissions,
      applied: state.applied,
      pending: state.pending,
    };
  },

  standin_pause(p) {
    const ms = Number(param(p, "ms"));
    if (!Number.isFinite(ms) || ms < 0) throw new RpcError("invalidParams", "Invalid field 'ms'.");
    pausedUntil = Date.now() + ms;
    return { paused_ms: ms };
  },
};

// ---- HTTP ----
let pausedUntil = 0;
const log = (line) => process.stderr.write(`${line}\n`);

function send(res, status, body, contentType = "application/json") {
  res.writeHead(status, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function handle(body) {
  let request;
  try {
    request = JSON.parse(body);
  } catch {
    return { http: 400, text: "Unable to parse request: invalid JSON" };
  }
  if (request === null || typeof request !== "object" || Array.isArray(request)) return { http: 400, text: "Unable to parse request: not an object" };
  const method = request.method;
  const done = (out) => ({ method, ...out });
  const params = request.params ?? [{}];
  const echo = { command: method, ...(Array.isArray(params) && typeof params[0] === "object" ? params[0] : {}) };
  const error = (e) => {
    const [code, message] = RPC_ERROR[e.error] ?? [];
    const result = { error: e.error, ...(code !== undefined ? { error_code: code } : {}), error_message: e.message ?? message, ...e.extra, request: echo, status: "error" };
    return done({ http: 200, result, summary: `error ${e.error}` });
  };
  if (typeof method !== "string" || method === "") return error(new RpcError("missingCommand"));
  if (!Array.isArray(params) || params.length !== 1 || params[0] === null || typeof params[0] !== "object") {
    return error(new RpcError("invalidParams", "params must be an array of one object."));
  }
  if (!Object.hasOwn(methods, method)) return error(new RpcError("unknownCmd"));
  try {
    const result = { ...methods[method](params[0]), status: "success" };
    const summary = method === "submit" ? `${result.engine_result} ${result.tx_json.hash}` : "success";
    return done({ http: 200, result, summary });
  } catch (e) {
    if (e instanceof RpcError) return error(e);
    log(`${method} internal error: ${e.stack}`);
    return done({ http: 500, text: `internal error: ${e.message}` });
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    // The body is read in every case so a keep-alive client's next request is not garbled.
    if (Date.now() < pausedUntil) {
      log(`${req.method} ${req.url} 503 (paused)`);
      return send(res, 503, "Service Unavailable (standin_pause)\n", "text/plain");
    }
    if (req.method !== "POST" || req.url !== "/") {
      log(`${req.method} ${req.url} 405`);
      return send(res, 405, "JSON-RPC: POST / only\n", "text/plain");
    }
    const out = handle(Buffer.concat(chunks).toString("utf8"));
    const method = out.method ?? "?";
    if (out.text !== undefined) {
      log(`${method} ${out.http} ${out.text}`);
      return send(res, out.http, `${out.text}\n`, "text/plain");
    }
    log(`${method} ${out.summary}`);
    return send(res, 200, JSON.stringify({ result: out.result }));
  });
});

const closer = setInterval(closeLedger, opts.closeMs);
server.listen(opts.port, "127.0.0.1", () => {
  // stdout is a pipe for the tests; on Linux pipe writes are synchronous, so this is flushed.
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    clearInterval(closer);
    server.close();
    process.exit(0);
  });
}
