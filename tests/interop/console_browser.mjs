// Drives headless Chromium (Debian package `chromium`) through the read-only console of a
// running appliance, over the DevTools protocol on a pipe (--remote-debugging-pipe: no port,
// no extra Node module). For each step it records the page's text, its console errors and
// exceptions, and a screenshot; it prints one JSON object on stdout for the Rust test to
// check.
//
// usage: node console_browser.mjs BASE_URL OFFICER_TOKEN AUDITOR_TOKEN WRONG_TOKEN SHOT_DIR
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, officer, auditor, wrong, shots] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "mpcp-console-"));
const chromium = spawn(
  "chromium",
  [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-extensions",
    "--ignore-certificate-errors",
    "--remote-debugging-pipe",
    `--user-data-dir=${profile}`,
    "--window-size=1100,760",
    "about:blank",
  ],
  { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] }
);
chromium.stderr.on("data", () => {});
const toBrowser = chromium.stdio[3];
const fromBrowser = chromium.stdio[4];

let nextId = 1;
const pending = new Map();
const listeners = [];
let buffer = Buffer.alloc(0);
fromBrowser.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  let end;
  while ((end = buffer.indexOf(0)) >= 0) {
    const msg = JSON.parse(buffer.subarray(0, end).toString("utf8"));
    buffer = buffer.subarray(end + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(JSON.stringify(msg.error)));
      else resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners) l(msg);
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  toBrowser.write(JSON.stringify(msg) + "\0");
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = setTimeout(() => {
  console.error("console_browser: timed out");
  chromium.kill("SIGKILL");
  process.exit(2);
}, 90_000);

// Console errors, exceptions and log entries of level error, since the last step.
let errors = [];
listeners.push((m) => {
  if (m.method === "Runtime.exceptionThrown") {
    errors.push("exception: " + JSON.stringify(m.params.exceptionDetails.exception?.description || m.params.exceptionDetails.text));
  } else if (m.method === "Runtime.consoleAPICalled" && (m.params.type === "error" || m.params.type === "warning")) {
    errors.push("console." + m.params.type + ": " + m.params.args.map((a) => a.value ?? a.description).join(" "));
  } else if (m.method === "Log.entryAdded" && (m.params.entry.level === "error" || m.params.entry.level === "warning")) {
    errors.push("log " + m.params.entry.source + ": " + m.params.entry.text + " " + (m.params.entry.url || ""));
  }
});

const { targetId } = await send("Target.createTarget", { url: "about:blank" });
const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
const page = (method, params) => send(method, params, sessionId);
await page("Page.enable");
await page("Runtime.enable");
await page("Log.enable");

async function evaluate(expression) {
  const r = await page("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
  if (r.exceptionDetails) throw new Error("evaluate: " + JSON.stringify(r.exceptionDetails));
  return r.result.value;
}

async function until(expression, what) {
  for (let i = 0; i < 200; i++) {
    if (await evaluate(expression)) return;
    await sleep(50);
  }
  throw new Error("waited in vain for " + what);
}

async function load() {
  const loaded = new Promise((resolve) => {
    const l = (m) => {
      if (m.method === "Page.loadEventFired" && m.sessionId === sessionId) {
        listeners.splice(listeners.indexOf(l), 1);
        resolve();
      }
    };
    listeners.push(l);
  });
  await page("Page.navigate", { url: base + "/console/" });
  await loaded;
  await until("document.readyState === 'complete'", "the page");
}

const steps = [];
async function step(name) {
  await sleep(100);
  const shot = await page("Page.captureScreenshot", { format: "png" });
  writeFileSync(join(shots, name + ".png"), Buffer.from(shot.data, "base64"));
  const text = await evaluate("document.body.innerText");
  const storage = await evaluate("localStorage.length + sessionStorage.length + document.cookie.length");
  steps.push({ name, text, errors, storage });
  errors = [];
}

async function signIn(token) {
  await evaluate(
    `document.getElementById('token').value = ${JSON.stringify(token)};` +
      "document.getElementById('signin-form').requestSubmit(); true"
  );
}

async function open(name) {
  await evaluate(`document.querySelector('nav [data-page=${name}]').click(); true`);
  await until(`document.getElementById('page').dataset.page === '${name}'`, "page " + name);
}

try {
  // A wrong token is refused and the sign-in form stays.
  await load();
  await step("signin");
  await signIn(wrong);
  await until("document.getElementById('signin-error').textContent !== ''", "the refusal");
  await step("wrong-token");

  // The security officer: keys, tokens, readiness.
  await load();
  await signIn(officer);
  await until("document.getElementById('page').dataset.page === 'keys'", "the keys page");
  await step("keys");
  await open("tokens");
  await step("tokens");
  await open("ready");
  await step("ready-officer");

  // The auditor: the audit log (with an inclusion proof), grants, readiness.
  await load();
  await signIn(auditor);
  await until("document.getElementById('page').dataset.page === 'audit'", "the audit page");
  await evaluate("document.querySelector('[data-index]').click(); true");
  await until("document.getElementById('proof').textContent !== ''", "an inclusion proof");
  await step("audit");
  await open("grants");
  await step("grants");
  await open("receipts");
  await step("receipts");
  await open("ledger");
  await step("ledger");
  await open("ready");
  await step("ready");
  console.log(JSON.stringify({ steps }));
} catch (err) {
  console.error(err.stack || String(err));
  console.log(JSON.stringify({ steps, failure: String(err) }));
  process.exitCode = 1;
} finally {
  clearTimeout(deadline);
  try {
    await send("Browser.close");
  } catch {}
  // Its profile can only go once the browser has let go of it.
  const exited = new Promise((resolve) => chromium.once("exit", resolve));
  chromium.kill();
  await Promise.race([exited, sleep(5000)]);
  try {
    rmSync(profile, { recursive: true, force: true });
  } catch {}
}
