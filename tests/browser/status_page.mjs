// Drives Debian's chromium against a running rollgate's status page.
//
// Run by tests/status_page.rs, which starts rollgate with a short rollout and
// traffic, then: node status_page.mjs <admin base URL> <screenshot path>.
// Checks, in a real browser:
//   1. the page loads with no request leaving the admin origin;
//   2. a phase change shows up without a reload (same document throughout);
//   3. the weights and every gate's status and colour shown match
//      /api/v1/status fetched right after a render;
//   4. the per-journey P95 charts are drawn and a timeline link opens an HTML report;
// then saves a full-page screenshot. Exits non-zero with a reason on failure.

import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node status_page.mjs <admin base URL> <screenshot.png>");
  process.exit(2);
}
const executablePath = process.env.ROLLGATE_CHROMIUM || "/usr/bin/chromium";
const origin = new URL(base).origin;

// The page's gate colours (status.html: .st-GREEN / .st-YELLOW / .st-RED).
const COLOURS = {
  GREEN: "rgb(31, 136, 61)",
  YELLOW: "rgb(212, 167, 44)",
  RED: "rgb(207, 34, 46)",
};

const fail = (msg) => {
  throw new Error(msg);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log("[status_page]", ...a);

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  timeout: 60_000,
});

let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const foreign = [];
  const pageErrors = [];
  let navigations = 0;
  page.on("request", (r) => {
    if (!r.url().startsWith(origin + "/")) foreign.push(r.url());
  });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations += 1;
  });

  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForFunction(() => Number(document.body.dataset.renders || 0) >= 1, null, { timeout: 15_000 });
  // A marker that a reload would wipe out.
  await page.evaluate(() => {
    window.__sameDocument = "yes";
  });
  const firstPhase = (await page.textContent("#phase")).trim();
  log("first phase shown:", firstPhase);

  // 2. A phase change appears without a reload.
  await page.waitForFunction(
    (first) => {
      const p = document.getElementById("phase").textContent.trim();
      return p !== first && p !== "–";
    },
    firstPhase,
    { timeout: 45_000, polling: 100 },
  );
  const secondPhase = (await page.textContent("#phase")).trim();
  log("phase changed to:", secondPhase);
  if ((await page.evaluate(() => window.__sameDocument)) !== "yes" || navigations !== 1) {
    fail(`the page reloaded (navigations: ${navigations})`);
  }
  const current = await page.$$eval(".phase.current .name", (e) => e.map((x) => x.textContent));
  if (current.length !== 1 || !current[0].includes(secondPhase)) {
    fail(`the phases list does not highlight ${secondPhase}: ${JSON.stringify(current)}`);
  }

  // 3. What is shown matches /api/v1/status fetched at the same moment. The
  // page polls every second and the controller ticks in between, so take the
  // status right after a render and retry on a race; one exact match passes.
  let lastMismatch = "never compared";
  let matched = null;
  for (let attempt = 0; attempt < 30 && !matched; attempt++) {
    const snap = await page.evaluate(async () => {
      await new Promise((r) => document.addEventListener("rollgate:render", r, { once: true }));
      const status = await (await fetch("/api/v1/status", { cache: "no-store" })).json();
      const rows = [...document.querySelectorAll("#gates tr.gate")].map((tr) => {
        const pill = tr.querySelector(".status");
        return {
          key: tr.dataset.key,
          status: pill.textContent.trim(),
          colour: getComputedStyle(pill).backgroundColor,
        };
      });
      return {
        status,
        shown: {
          state: document.getElementById("state").dataset.state,
          phase: document.getElementById("phase").textContent.trim(),
          w1: document.getElementById("w1").dataset.value,
          w2: document.getElementById("w2").dataset.value,
          w1Text: document.getElementById("w1").textContent,
          w2Text: document.getElementById("w2").textContent,
          rows,
        },
      };
    });
    const { status: s, shown } = snap;
    const expectRows = s.gates.map((g) => ({ key: `${g.name}/${g.journey ?? "all"}`, status: g.status }));
    const problems = [];
    if (shown.state !== s.state) problems.push(`state ${shown.state} vs ${s.state}`);
    if (shown.phase !== (s.phase ?? "–")) problems.push(`phase ${shown.phase} vs ${s.phase}`);
    if (Number(shown.w1) !== s.weights.v1 || Number(shown.w2) !== s.weights.v2) {
      problems.push(`weights ${shown.w1}/${shown.w2} vs ${s.weights.v1}/${s.weights.v2}`);
    }
    const round = (v) => String(Math.round(v * 100) / 100);
    if (shown.w1Text !== round(s.weights.v1) || shown.w2Text !== round(s.weights.v2)) {
      problems.push(`weight text ${shown.w1Text}/${shown.w2Text}`);
    }
    if (s.gates.length === 0) problems.push("no gates yet");
    if (shown.rows.length !== expectRows.length) problems.push(`${shown.rows.length} gate rows vs ${expectRows.length}`);
    for (const e of expectRows) {
      const row = shown.rows.find((r) => r.key === e.key);
      if (!row) problems.push(`gate ${e.key} missing`);
      else if (row.status !== e.status) problems.push(`gate ${e.key} shows ${row.status}, status says ${e.status}`);
    }
    // Colours are checked on every attempt: a wrong colour is never a race.
    for (const r of shown.rows) {
      if (COLOURS[r.status] !== r.colour) {
        fail(`gate ${r.key} is ${r.status} but coloured ${r.colour} (want ${COLOURS[r.status]})`);
      }
    }
    if (problems.length) lastMismatch = problems.join("; ");
    else matched = { state: s.state, phase: s.phase, weights: s.weights, gates: expectRows };
  }
  if (!matched) fail(`the page never matched /api/v1/status: ${lastMismatch}`);
  log("page matches /api/v1/status:", JSON.stringify(matched));

  // 4. Charts drawn from /api/v1/history, and a working report link.
  await page.waitForFunction(
    () => document.querySelectorAll("#charts .chart[data-journey] svg path").length >= 2,
    null,
    { timeout: 20_000 },
  );
  const charts = await page.$$eval("#charts .chart", (c) => c.map((x) => x.dataset.journey));
  log("charts:", charts.join(", "));
  await page.waitForSelector("#timeline a", { timeout: 20_000 });
  const href = await page.getAttribute("#timeline a", "href");
  const report = await page.evaluate(async (h) => {
    const r = await fetch(h);
    return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
  }, href);
  if (report.status !== 200 || !report.type.startsWith("text/html") || !report.body.includes("<table>")) {
    fail(`report link ${href} did not give an HTML report: ${report.status} ${report.type}`);
  }
  log("report link ok:", href);

  // Let one more tick land so the screenshot shows a lived-in page.
  await sleep(1500);
  await page.screenshot({ path: screenshot, fullPage: true });
  log("screenshot:", screenshot);

  if (foreign.length) fail(`the page fetched outside ${origin}: ${foreign.join(", ")}`);
  if (pageErrors.length) fail(`script errors on the page: ${pageErrors.join(" | ")}`);
  console.log(JSON.stringify({ ok: true, firstPhase, secondPhase, matched, charts }));
} catch (e) {
  console.error("[status_page] FAILED:", e && e.message ? e.message : e);
  try {
    const s = await (await fetch(base + "/api/v1/status")).json();
    const gates = s.gates.map((g) => `${g.name}/${g.journey ?? "all"}=${g.status} (${g.reason})`);
    console.error(`[status_page] status then: ${s.state} ${s.phase} V2 ${s.weights.v2}%: ${s.detail}; last decision: ${JSON.stringify(s.last_decision)}; gates: ${gates.join("; ")}`);
  } catch (_) {
    console.error("[status_page] (could not fetch /api/v1/status for context)");
  }
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
