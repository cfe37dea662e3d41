// mpcp-pa read-only console. Calls the appliance's own JSON APIs with the token the user
// typed, which lives in the variable below only: never in storage, cookies or the URL.
"use strict";

let token = null;
let role = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function state(s) {
  return el("span", { class: "state state-" + s }, s);
}

async function api(path, accept) {
  const headers = { Authorization: "Bearer " + token };
  if (accept) headers.Accept = accept;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  const text = await r.text();
  let body = text;
  if ((r.headers.get("content-type") || "").startsWith("application/json")) {
    body = JSON.parse(text);
  }
  return { status: r.status, body };
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))))))
  );
}

function mono(text) {
  return el("td", { class: "mono" }, text === null || text === undefined ? "" : text);
}

function card(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

function refusal(r, needs) {
  if (r.status === 403) return el("p", { class: "muted" }, "This page needs the " + needs + " role.");
  const msg = r.body && r.body.code ? r.body.code + ": " + r.body.message : "HTTP " + r.status;
  return el("p", { class: "error" }, msg);
}

// Pages ------------------------------------------------------------------------------------

async function pageReady() {
  const r = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
  const body = await r.json();
  const out = [card("Readiness", el("p", {}, "Appliance: ", state(r.status === 200 ? "ready" : "failing"), " ",
    r.status === 200 ? "" : body.message || ""))];
  const m = role === "auditor" || role === "monitoring" ? await api("/metrics") : { status: 403 };
  if (m.status === 200) {
    const rows = [];
    for (const line of m.body.split("\n")) {
      const hit = /^mpcp_ready\{check="([^"]*)"\} (\d+)/.exec(line);
      if (hit) rows.push([hit[1], state(hit[2] === "1" ? "ok" : "failing")]);
    }
    out.push(card("Checks (HSM tokens, keys, store, audit log)", table(["check", "state"], rows)));
  } else {
    out.push(card("Checks", el("p", { class: "muted" }, "Per-check states need an auditor or monitoring token (GET /metrics).")));
  }
  return out;
}

async function pageKeys() {
  const r = await api("/v1/keys");
  if (r.status !== 200) return [card("Keys", refusal(r, "security-officer"))];
  const byRole = {};
  for (const k of r.body.keys) (byRole[k.role] = byRole[k.role] || []).push(k);
  return Object.keys(byRole).sort().map((roleName) =>
    card("Keys: " + roleName, table(
      ["kid", "alg", "state", "created", "activated", "destruction due"],
      byRole[roleName].map((k) => [mono(k.kid), k.alg, state(k.state), k.createdAt || "", k.activatedAt || "",
        k.destroyAfter ? el("span", { class: "state state-pending" }, k.destroyAfter) : ""])
    )));
}

async function pageTokens() {
  const r = await api("/v1/tokens");
  if (r.status !== 200) return [card("API tokens", refusal(r, "security-officer"))];
  return [card("API tokens (names and roles; secrets are never shown)", table(
    ["name", "role", "state", "created", "revoked"],
    r.body.tokens.map((t) => [t.name, t.role, state(t.active ? "active" : "revoked"), t.createdAt || "", t.revokedAt || ""])
  ))];
}

/// The latest entries of the log (up to `n`), oldest first, and the log size.
async function latestEntries(n) {
  const cp = await api("/v1/audit/checkpoint");
  if (cp.status !== 200) return { refused: cp };
  const head = await api("/v1/audit/entries?start=0&end=0");
  if (head.status !== 200) return { refused: head };
  const size = head.body.size;
  const start = Math.max(0, size - n);
  const r = await api("/v1/audit/entries?start=" + start + "&end=" + size);
  if (r.status !== 200) return { refused: r };
  return { checkpoint: cp.body, size, entries: r.body.entries };
}

function sizePlot(entries) {
  const w = 800, h = 160, pad = 30;
  const box = svg("svg", { viewBox: "0 0 " + w + " " + h, class: "plot", role: "img", "aria-label": "log size over time" });
  if (entries.length < 2) return box;
  const ts = entries.map((e) => Date.parse(e.time));
  const t0 = Math.min(...ts), t1 = Math.max(...ts) || t0 + 1;
  const i0 = entries[0].index, i1 = entries[entries.length - 1].index + 1;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const y = (i) => h - pad - ((i - i0) / Math.max(1, i1 - i0)) * (h - 2 * pad);
  box.append(svg("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad }));
  box.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: h - pad }));
  const points = entries.map((e, k) => x(ts[k]).toFixed(1) + "," + y(e.index + 1).toFixed(1)).join(" ");
  box.append(svg("polyline", { points }));
  const label = (tx, ty, text) => { const t = svg("text", { x: tx, y: ty }); t.textContent = text; box.append(t); };
  label(pad, h - 8, new Date(t0).toISOString());
  label(w - pad - 150, h - 8, new Date(t1).toISOString());
  label(pad + 4, pad - 8, i1 + " entries");
  return box;
}

async function pageAudit() {
  const got = await latestEntries(200);
  if (got.refused) return [card("Audit log", refusal(got.refused, "auditor"))];
  const cp = got.checkpoint;
  const proof = el("pre", { class: "mono", id: "proof" });
  const rows = got.entries.slice(-50).reverse().map((e) => {
    const b = el("button", { class: "tab", "data-index": String(e.index) }, "inclusion proof");
    b.addEventListener("click", async () => {
      const p = await api("/v1/audit/proofs/inclusion?index=" + e.index);
      proof.textContent = "entry " + e.index + ": " + JSON.stringify(p.body, null, 2);
    });
    return [String(e.index), e.time, e.actor.name, e.event.action, el("td", {}, b)];
  });
  return [
    card("Audit log",
      el("dl", {}, el("dt", {}, "entries"), el("dd", { id: "log-size" }, String(got.size)),
        el("dt", {}, "latest checkpoint"), el("dd", {}, "size " + cp.size + ", signed by " + (cp.kid || cp.vkey)),
        el("dt", {}, "root hash"), el("dd", { class: "mono" }, cp.rootHash),
        el("dt", {}, "origin"), el("dd", {}, cp.origin))),
    card("Size over time (last " + got.entries.length + " entries)", sizePlot(got.entries)),
    card("Recent entries", table(["index", "time", "actor", "action", ""], rows), proof),
  ];
}

async function pageGrants() {
  const got = await latestEntries(1000);
  if (got.refused) return [card("Grants", refusal(got.refused, "auditor"))];
  const issued = [], revoked = [];
  for (const e of got.entries) {
    if (e.event.action === "grant_issued") issued.push(e);
    if (e.event.action === "grant_revoked") revoked.push(e);
  }
  const revokedIds = new Set(revoked.map((e) => e.event.grantId));
  return [
    card("Grants issued (from the last " + got.entries.length + " audit entries)", table(
      ["grant", "issued", "by", "signed by", "state"],
      issued.reverse().map((e) => [mono(e.event.grantId), e.time, e.actor.name, mono(e.event.issuerKeyId || ""),
        state(revokedIds.has(e.event.grantId) ? "revoked" : "active")]))),
    card("Grants revoked", table(
      ["grant", "revoked", "by", "reason"],
      revoked.reverse().map((e) => [mono(e.event.grantId), e.time, e.actor.name, e.event.reason || ""]))),
  ];
}

async function pageReceipts() {
  const p = await api("/v1/receipts/policy");
  const policy = p.status === 200
    ? card("Receipt policy " + p.body.policy.policyId,
      el("dl", {}, el("dt", {}, "policyId of its decisions"), el("dd", { class: "mono" }, p.body.policyDigest),
        el("dt", {}, "when no rule matches"), el("dd", {}, state(p.body.policy.otherwise))),
      table(["requesters", "audiences", "tools", "decision", "max age s", "reason"],
        p.body.policy.rules.map((r) => [r.requesters.join(" "), r.audiences.join(" "), r.tools.join(" "),
          state(r.decision), String(r.maxAgeSeconds), r.reason || ""])))
    : card("Receipt policy", refusal(p, "auditor"));
  const got = await latestEntries(1000);
  if (got.refused) return [policy, card("Receipts", refusal(got.refused, "auditor"))];
  const consumed = new Map(), outcomes = new Map(), decided = [];
  for (const e of got.entries) {
    const ev = e.event;
    if (ev.action === "receipt_decided") decided.push(e);
    if (ev.action === "receipt_consumed") consumed.set(ev.decisionDigest, e);
    if (ev.action === "receipt_outcome_signed") outcomes.set(ev.decisionDigest, ev.status);
  }
  return [
    policy,
    card("Decisions (from the last " + got.entries.length + " audit entries)", table(
      ["decided", "requester", "action", "tool", "audience", "decision", "consumed", "outcome", "digest"],
      decided.reverse().map((e) => {
        const ev = e.event, c = consumed.get(ev.decisionDigest);
        return [e.time, e.actor.name, mono(ev.actionId), ev.tool, ev.audience, state(ev.decision),
          c ? state("admitted") : "", outcomes.get(ev.decisionDigest) || "", mono(ev.decisionDigest.slice(0, 23) + "…")];
      }))),
  ];
}

async function pageLedger() {
  const a = await api("/v1/ledger/account");
  const account = a.status === 200
    ? card("XRPL account " + a.body.account,
      el("dl", {}, el("dt", {}, "key"), el("dd", { class: "mono" }, a.body.kid + " (" + a.body.algorithm + ")"),
        el("dt", {}, "next sequence"), el("dd", {}, a.body.nextSequence + " (" + a.body.sequenceSource + ")"),
        el("dt", {}, "fee"), el("dd", {}, a.body.feeDrops + " drops")))
    : card("XRPL account", refusal(a, "auditor"));
  const t = await api("/v1/ledger/transactions");
  if (t.status !== 200) return [account, card("Credential transactions", refusal(t, "auditor"))];
  const txs = t.body.transactions;
  const counts = {};
  for (const x of txs) counts[x.state] = (counts[x.state] || 0) + 1;
  const summary = Object.entries(counts).map(([s, n]) => n + " " + s).join(", ") || "none yet";
  return [
    account,
    card("Credential transactions (" + summary + ")", table(
      ["sequence", "type", "cause", "subject", "state", "result", "hash"],
      txs.map((x) => [String(x.sequence), x.transactionType,
        x.cause.event + " " + (x.cause.grantId || x.cause.kid || ""), mono(x.subject),
        state(x.state), x.result || "", mono(x.hash.slice(0, 16) + "…")]))),
  ];
}

const pages = { ready: pageReady, keys: pageKeys, tokens: pageTokens, audit: pageAudit, grants: pageGrants, receipts: pageReceipts, ledger: pageLedger };

async function show(name) {
  for (const b of document.querySelectorAll("nav .tab[data-page]")) {
    b.classList.toggle("active", b.dataset.page === name);
  }
  const main = $("page");
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  try {
    main.replaceChildren(...(await pages[name]()));
  } catch (err) {
    main.replaceChildren(el("p", { class: "error" }, "Could not load: " + err.message));
  }
  main.dataset.page = name;
}

// Sign in ----------------------------------------------------------------------------------

async function signIn(candidate) {
  token = candidate;
  // Asked, not tried: a refused request would be an audit entry.
  const me = await api("/v1/whoami");
  if (me.status !== 200) {
    token = null;
    throw new Error(me.status === 401 ? "token refused (unknown, revoked or malformed)" : "sign-in failed: HTTP " + me.status);
  }
  role = me.body.role;
  // Only the pages this role can read.
  for (const b of document.querySelectorAll("nav .tab[data-page]")) {
    b.hidden = !(b.dataset.roles || "").split(" ").includes(role);
  }
  return me.body;
}

function signOut() {
  token = null;
  role = null;
  $("nav").hidden = true;
  $("signin").hidden = false;
  $("who").textContent = "";
  $("page").replaceChildren();
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("token");
    const candidate = input.value.trim();
    input.value = "";
    $("signin-error").textContent = "";
    let me;
    try {
      me = await signIn(candidate);
    } catch (err) {
      $("signin-error").textContent = err.message;
      return;
    }
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("who").textContent = "signed in as " + me.name + " (" + role + ")";
    await show(role === "security-officer" ? "keys" : role === "auditor" ? "audit" : "ready");
  });
  for (const b of document.querySelectorAll("nav .tab[data-page]")) {
    b.addEventListener("click", () => show(b.dataset.page));
  }
  $("signout").addEventListener("click", signOut);
});
