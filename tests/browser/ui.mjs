// The web page in a real browser (issue 15): Debian's chromium driven by playwright-core, against a running
// `converge serve --token-file` (host/cli/tests/it/ui.rs starts it and this script). Environment: BASE (the
// server's URL), TOKEN, CHROMIUM (the browser), SPEC (the review job's JSON), ANSWER, SHOTS (where
// screenshots go). Prints one JSON line with what the Rust test checks; exits 1 (with a screenshot of the page
// as it was) on any failure.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";

const { BASE, TOKEN, CHROMIUM, SPEC, ANSWER, SHOTS } = process.env;
const TIMEOUT = 60_000;
const spec = readFileSync(SPEC, "utf8");
mkdirSync(SHOTS, { recursive: true });

const auth = { Authorization: `Bearer ${TOKEN}` };
async function call(path, init = {}) {
  const r = await fetch(`${BASE}${path}`, { ...init, headers: { ...auth, ...(init.headers || {}) } });
  const body = await r.json();
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}
const submit = async () => (await call("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: spec })).id;
async function until(what, f) {
  const end = Date.now() + TIMEOUT;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const jobStatus = async (id) => (await call(`/v1/jobs/${id}`)).status;
const traceSeqs = async (id) => (await call(`/v1/jobs/${id}/trace`)).events.map((e) => e.seq);

// The browser reaches the server through this proxy, so the test can cut the network under the page: every
// open connection (the event stream among them) is reset and new ones refused until it is restored.
const target = new URL(BASE);
let up = true;
const sockets = new Set();
const proxy = net.createServer((client) => {
  if (!up) return client.destroy();
  const upstream = net.connect(Number(target.port), target.hostname);
  const close = () => {
    client.destroy();
    upstream.destroy();
    sockets.delete(client);
  };
  sockets.add(client);
  client.pipe(upstream);
  upstream.pipe(client);
  for (const s of [client, upstream]) {
    s.on("error", close);
    s.on("close", close);
  }
});
await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
const PAGE = `http://127.0.0.1:${proxy.address().port}`;
const cut = () => {
  up = false;
  for (const s of sockets) s.destroy();
};

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const requests = [];
context.on("request", (r) => requests.push(r.url()));
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
const out = {};

const statusIs = (s) => page.locator(`#job-status [data-status="${s}"]`).waitFor();
const connectionIs = (s) => page.locator(`#job-connection [data-status="${s}"]`).waitFor();

try {
  // The token is asked for once and kept in session storage.
  await page.goto(`${PAGE}/ui/`);
  await page.getByLabel("Token").fill(TOKEN);
  await page.getByRole("button", { name: "Use token" }).click();
  await page.locator("#jobs").waitFor();
  out.tokenInSession = (await page.evaluate(() => sessionStorage.getItem("converge.token"))) === TOKEN;

  // 1. A job that asks a question, answered through the page's form.
  const first = await submit();
  await until("the first job to wait", async () => (await jobStatus(first)) === "waiting");
  await page.goto(`${PAGE}/ui/jobs/${first}`);
  await statusIs("waiting");
  await connectionIs("live");
  const prompt = (await call(`/v1/jobs/${first}`)).open_questions[0].prompt;
  await page.getByLabel(prompt).fill(ANSWER);
  await page.getByRole("button", { name: "Answer" }).click();
  await statusIs("converged");
  await page.locator('#facts tr[data-key="decision/final"]').waitFor();
  await page.locator("#trail", { hasText: ANSWER }).waitFor();
  out.firstFacts = await page.locator("#facts tbody tr").count();
  out.firstCycles = await page.locator("#cycles [data-cycle]").count();
  out.firstApplied = await page.evaluate(() => window.convergeDebug.applied);
  out.firstTrace = await traceSeqs(first);
  out.firstHash = (await call(`/v1/jobs/${first}`)).context_hash;
  await page.screenshot({ path: join(SHOTS, "job.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(SHOTS, "job-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // 2. The live connection drops while the job goes on; the page resumes from Last-Event-ID and shows every
  // event once.
  const second = await submit();
  await until("the second job to wait", async () => (await jobStatus(second)) === "waiting");
  await page.goto(`${PAGE}/ui/jobs/${second}`);
  await statusIs("waiting");
  await connectionIs("live");
  cut();
  await connectionIs("reconnecting");
  const question = (await call(`/v1/jobs/${second}`)).open_questions[0].id;
  await call(`/v1/jobs/${second}/answers`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question, answer: ANSWER }),
  });
  await until("the second job to converge", async () => (await jobStatus(second)) === "converged");
  up = true;
  await statusIs("converged");
  await page.locator('#facts tr[data-key="decision/final"]').waitFor();
  out.secondApplied = await page.evaluate(() => window.convergeDebug.applied);
  out.secondTrace = await traceSeqs(second);
  out.secondConnections = await page.evaluate(() => window.convergeDebug.connections);
  out.secondHash = (await call(`/v1/jobs/${second}`)).context_hash;

  // 3. The list, filtered by status, and the tools page.
  await page.goto(`${PAGE}/ui/?status=converged`);
  await page.locator(`#jobs tr[data-job="${second}"]`).waitFor();
  out.listed = await page.locator("#jobs tbody tr[data-job]").count();
  await page.goto(`${PAGE}/ui/tools`);
  await page.locator("#main section.card", { hasText: "score" }).first().waitFor();
  out.tools = await page.locator("#main section.card").count();

  out.requests = requests;
  out.outside = requests.filter((u) => !u.startsWith(`${PAGE}/`));
  out.tokenInUrl = requests.filter((u) => u.includes(TOKEN));
  out.consoleErrors = consoleErrors;
  out.pageErrors = pageErrors;
  console.log(JSON.stringify(out));
  await browser.close();
  proxy.close();
} catch (e) {
  const shot = join(SHOTS, "failure.png");
  await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error(`browser test failed: ${e.stack || e}\nscreenshot: ${shot}\nconsole: ${consoleErrors.join("\n")}\nerrors: ${pageErrors.join("\n")}`);
  console.log(JSON.stringify(out));
  await browser.close();
  proxy.close();
  process.exit(1);
}
