// The web page in a real browser against the real gateway: forms, live
// output, what a reload, a closed tab and Stop do to a bound run's process
// tree, background jobs, the job list, the token, and the page's
// confinement to its own origin under its Content-Security-Policy.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { Validator } from "@seriousme/openapi-schema-validator";
import {
  api, artifactDir, groupGone, repoRoot, groupMembers, launchBrowser, openPage, removeBuild,
  runningJob, screenshot, startGateway, waitFor,
} from "./harness.mjs";

const commands = `
commands:
  types:
    description: Every parameter type
    argv: [echo, "{count}", "{mode}", "{verbose}", "{name}", "{password}"]
    params:
      count: {type: int, min: 1, max: 10, required: true, description: How many}
      mode: {type: enum, values: [fast, slow], default: fast}
      verbose: {type: bool, default: "false"}
      name: {pattern: '^[a-z]+$', max_len: 12, default: world}
      password: {secret: true}
  tree:
    description: A pipeline that runs until stopped
    argv: [sh, -c, "sleep 300 | cat"]
  lines:
    description: One line, then a long wait
    argv: [sh, -c, "echo first line; echo to stderr >&2; exec sleep 300"]
  background:
    description: Starts, then waits
    argv: [sh, -c, "echo started; sleep 1; echo later >&2; exec sleep 300"]
  hello:
    description: Says hello
    argv: [echo, "hello {who}"]
    params:
      who: {default: world, max_len: 8}
  fails:
    description: Exits 3
    argv: [sh, -c, "echo oops >&2; exit 3"]
`;

let browser, gw;

before(async () => {
  browser = await launchBrowser();
  gw = await startGateway(commands);
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  removeBuild();
});

// The form of command name on the page.
const form = (page, name) => page.getByRole("form", { name, exact: true });

test("every parameter type renders as its input kind, and the browser refuses an out-of-range value", async () => {
  const p = await openPage(browser, gw);
  const f = form(p.page, "types");
  await f.waitFor();
  assert.match(await f.textContent(), /Every parameter type/);
  const kinds = await f.evaluate((el) => Object.fromEntries([...el.querySelectorAll("input, select")].map((i) => [
    i.name, { tag: i.tagName, type: i.type, min: i.min, max: i.max, required: i.required, value: i.value,
      checked: i.checked, pattern: i.pattern, maxLength: i.maxLength, label: i.labels[0]?.textContent,
      options: i.tagName === "SELECT" ? [...i.options].map((o) => o.value) : undefined }])));
  assert.deepEqual(kinds.count, { ...kinds.count, tag: "INPUT", type: "number", min: "1", max: "10", required: true, value: "" });
  assert.deepEqual(kinds.mode, { ...kinds.mode, tag: "SELECT", value: "fast", options: ["fast", "slow"] });
  assert.deepEqual(kinds.verbose, { ...kinds.verbose, tag: "INPUT", type: "checkbox", checked: false });
  assert.deepEqual(kinds.name, { ...kinds.name, tag: "INPUT", type: "text", value: "world", maxLength: 12 });
  assert.ok(kinds.name.pattern.includes("^[a-z]+$"), "pattern " + kinds.name.pattern);
  assert.deepEqual(kinds.password, { ...kinds.password, tag: "INPUT", type: "password", required: false });
  for (const [name, k] of Object.entries(kinds)) assert.match(k.label, new RegExp("^" + name), "label of " + name);
  // Labels name their inputs for assistive technology too.
  assert.equal(await f.getByLabel("count").getAttribute("type"), "number");

  await screenshot(p.page, "commands");

  const before = p.seen.requests.length;
  for (const bad of ["11", "0"]) {
    await f.getByLabel("count").fill(bad);
    await f.getByRole("button", { name: "Run", exact: true }).click();
    assert.equal(await f.getByLabel("count").evaluate((i) => i.validity.valid), false, bad + " accepted");
  }
  await f.getByLabel("count").fill("3");
  await f.getByLabel("name").fill("NotLower");
  await f.getByRole("button", { name: "Run", exact: true }).click();
  assert.equal(await f.getByLabel("name").evaluate((i) => i.validity.patternMismatch), true);
  assert.equal(p.seen.requests.slice(before).filter((r) => r.url().includes("/run")).length, 0, "a refused value was sent");

  // In range, the run goes through and shows the output and the end.
  await f.getByLabel("name").fill("abc");
  await f.getByLabel("verbose").check();
  await f.getByLabel("password").fill("s3cret");
  await f.getByRole("button", { name: "Run", exact: true }).click();
  await f.getByRole("log").filter({ hasText: "3 fast true abc s3cret" }).waitFor();
  await f.getByText(/Ended succeeded, exit code 0/).waitFor();
  p.check(assert, ["s3cret"]);
  await p.context.close();
});

test("the gateway's own message is shown for what only it refuses", async () => {
  const p = await openPage(browser, gw, { allowConsole: /status of 400/ });
  const f = form(p.page, "hello");
  // max_len counts bytes at the gateway, characters in the browser: six
  // two-byte characters pass the form and are refused by the gateway.
  await f.getByLabel("who").fill("éééééé");
  await f.getByRole("button", { name: "Run", exact: true }).click();
  await f.getByRole("status").filter({ hasText: /parameter "who"/ }).waitFor();
  const fails = form(p.page, "fails");
  await fails.getByRole("button", { name: "Run", exact: true }).click();
  await fails.getByText(/Ended failed, exit code 3/).waitFor();
  assert.match(await fails.getByRole("log").textContent(), /oops/);
  p.check(assert);
  await p.context.close();
});

test("Run shows the first line before the command has finished, and Stop kills the tree", async () => {
  const p = await openPage(browser, gw);
  const f = form(p.page, "lines");
  await f.getByRole("button", { name: "Run", exact: true }).click();
  await f.getByRole("log").filter({ hasText: "first line" }).waitFor();
  assert.match(await f.getByRole("log").textContent(), /to stderr/);
  const job = await runningJob(gw, "lines"); // still running: the line came live
  assert.ok(groupMembers(job.pid).length > 0);
  await screenshot(p.page, "bound-run");

  const t0 = performance.now();
  await f.getByRole("button", { name: "Stop" }).click();
  await groupGone(job.pid, t0);
  const rec = await waitFor("record ended", async () => {
    const r = await api(gw, "/v1/jobs/" + job.id);
    return r.state !== "running" && r;
  });
  assert.equal(rec.state, "canceled");
  assert.equal(rec.cancel_reason, "client_disconnected");
  await f.getByText(/Stopped/).waitFor();
  p.check(assert);
  await p.context.close();
});

// treeKilledBy runs tree from the page, then does leave to the page, and
// returns how long from leave to the last process of the tree gone, and
// to the browser dropping the run's request (-1 if it was not seen).
async function treeKilledBy(leave) {
  const p = await openPage(browser, gw);
  let dropped = -1;
  await form(p.page, "tree").getByRole("button", { name: "Run", exact: true }).click();
  const job = await runningJob(gw, "tree");
  await waitFor("sh, sleep and cat running", () => groupMembers(job.pid).length === 3);
  const t0 = performance.now();
  p.page.on("requestfailed", (r) => { if (r.url().includes("/run")) dropped = performance.now() - t0; });
  const left = leave(p);
  const ms = await groupGone(job.pid, t0, 2000);
  await left;
  const rec = await waitFor("record ended", async () => {
    const r = await api(gw, "/v1/jobs/" + job.id);
    return r.state !== "running" && r;
  });
  assert.equal(rec.state, "canceled");
  assert.equal(rec.cancel_reason, "client_disconnected");
  if (!p.page.isClosed()) p.check(assert);
  await p.context.close();
  return { ms, dropped };
}

test("a reload during a bound run kills the whole tree", async () => {
  await treeKilledBy((p) => p.page.reload());
});

test("closing the tab during a bound run kills the whole tree", async () => {
  await treeKilledBy((p) => p.page.close());
});

test("navigating away during a bound run kills the whole tree", async () => {
  // To a page of no origin: nothing the browser may fetch for the next page
  // (its icon, say) is part of the test.
  await treeKilledBy((p) => p.page.goto("about:blank"));
});

test("reload to last process gone: the figure of docs/performance.md", async (t) => {
  const runs = Number(process.env.EXECGW_RELOAD_RUNS || 20);
  const gone = [], dropped = [];
  for (let i = 0; i < runs; i++) {
    const r = await treeKilledBy((p) => p.page.reload());
    gone.push(r.ms);
    if (r.dropped >= 0) dropped.push(r.dropped);
  }
  const q = (xs, f) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(f * xs.length) - 1)].toFixed(1);
  const line = `reload to tree gone over ${runs} runs: p50 ${q(gone, 0.5)} ms, p99 ${q(gone, 0.99)} ms, max ${q(gone, 1)} ms; ` +
    `reload to the browser dropping the request (${dropped.length} seen): p50 ${q(dropped, 0.5)} ms, p99 ${q(dropped, 0.99)} ms`;
  t.diagnostic(line);
  writeFileSync(join(artifactDir, "reload-to-gone.txt"), line + "\n");
});

test("Run in background survives a reload of its view, and Cancel ends it", async () => {
  const p = await openPage(browser, gw);
  await form(p.page, "background").getByRole("button", { name: "Run in background" }).click();
  await p.page.waitForURL(/#\/jobs\/[0-9A-Z]{26}$/);
  const id = new URL(p.page.url()).hash.split("/")[2];
  const log = p.page.getByRole("log", { name: "Job output" });
  await log.filter({ hasText: "started" }).waitFor();
  assert.doesNotMatch(await log.textContent(), /later/);
  await log.filter({ hasText: "later" }).waitFor(); // followed live
  const job = await runningJob(gw, "background");
  assert.equal(job.id, id);

  await p.page.reload();
  // Replayed (stdout and stderr each in order; the two streams' replays
  // are not ordered with each other).
  await log.filter({ hasText: "started" }).filter({ hasText: "later" }).waitFor();
  assert.equal((await api(gw, "/v1/jobs/" + id)).state, "running", "a reload canceled a detached job");
  assert.ok(groupMembers(job.pid).length > 0);
  await screenshot(p.page, "job-view");

  const t0 = performance.now();
  await p.page.getByRole("button", { name: "Cancel" }).click();
  await groupGone(job.pid, t0);
  await p.page.locator("#job-record dd.state").filter({ hasText: "canceled (user)" }).waitFor();
  await p.page.getByRole("button", { name: "Cancel" }).waitFor({ state: "hidden" });
  const rec = await api(gw, "/v1/jobs/" + id);
  assert.equal(rec.state, "canceled");
  assert.equal(rec.cancel_reason, "user");
  p.check(assert);
  await p.context.close();
});

test("the job list is live and filters by state and command", async () => {
  const p = await openPage(browser, gw, { path: "/#/jobs" });
  await api(gw, "/v1/commands/hello/run", { method: "POST" });
  await api(gw, "/v1/commands/fails/run", { method: "POST" });
  const rows = p.page.locator("#jobs tbody tr");
  // Updated live: the jobs started after the page opened appear.
  await rows.filter({ hasText: "fails" }).first().waitFor();
  await p.page.getByLabel("State", { exact: true }).selectOption("failed");
  await waitFor("only failed rows", async () => {
    const states = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.state));
    return states.length > 0 && states.every((s) => s === "failed");
  });
  await p.page.getByLabel("State", { exact: true }).selectOption("");
  await p.page.getByLabel("Command", { exact: true }).selectOption("hello");
  await waitFor("only hello rows", async () => {
    const cmds = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.command));
    return cmds.length > 0 && cmds.every((c) => c === "hello");
  });
  await p.page.getByLabel("Command", { exact: true }).selectOption("");
  await waitFor("all rows again", async () => {
    const cmds = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.command));
    return cmds.includes("hello") && cmds.includes("fails");
  });
  // Newest first.
  const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.querySelector("a").textContent));
  assert.deepEqual(ids, [...ids].sort().reverse());
  await screenshot(p.page, "jobs");
  p.check(assert);
  await p.context.close();
});

test("Tab and Enter run a command from the keyboard", async () => {
  const p = await openPage(browser, gw);
  const f = form(p.page, "hello");
  await f.waitFor();
  // Tab from the top of the page to hello's input.
  for (let i = 0; i < 60; i++) {
    await p.page.keyboard.press("Tab");
    if (await f.getByLabel("who").evaluate((el) => el === document.activeElement)) break;
  }
  assert.ok(await f.getByLabel("who").evaluate((el) => el === document.activeElement), "Tab never reached who");
  await p.page.keyboard.press("Control+A");
  await p.page.keyboard.type("keyboard");
  await p.page.keyboard.press("Enter");
  await f.getByRole("log").filter({ hasText: "hello keyboard" }).waitFor();
  await f.getByText(/Ended succeeded/).waitFor();
  await p.page.keyboard.press("Tab"); // on to Run
  assert.equal(await p.page.evaluate(() => document.activeElement.textContent), "Run");
  p.check(assert);
  await p.context.close();
});

test("readable on a phone", async () => {
  const p = await openPage(browser, gw, { viewport: { width: 390, height: 844 }, isMobile: true });
  await form(p.page, "types").waitFor();
  const overflow = await p.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, "the page is wider than the phone by " + overflow + " px");
  await screenshot(p.page, "phone");
  p.check(assert);
  await p.context.close();
});

test("/openapi.json validates with a standard OpenAPI 3.1 validator", async () => {
  const doc = await api(gw, "/openapi.json");
  const validator = new Validator();
  const res = await validator.validate(doc);
  assert.equal(validator.version, "3.1");
  assert.ok(res.valid, JSON.stringify(res.errors, null, 1));
});

test("a wrong token is said to be wrong, and no token is ever put in a URL", async () => {
  const right = "egw_browser-right-token-123456", wrong = "egw_browser-wrong-token-654321";
  const sha = createHash("sha256").update(right).digest("hex");
  const authed = await startGateway(`
auth:
  tokens:
    - {name: ops, sha256: "${sha}", commands: [hello]}
` + commands);
  try {
    const p = await openPage(browser, authed, { allowConsole: /status of 401/ });
    const tokenField = p.page.getByLabel("Token", { exact: true });
    await tokenField.waitFor(); // asked for: the gateway needs one
    await p.page.getByText(/A token is needed \(401\)/).first().waitFor();

    await tokenField.fill(wrong);
    await tokenField.press("Enter");
    await p.page.getByText(/Wrong token \(401\)/).first().waitFor();
    await screenshot(p.page, "wrong-token");

    await tokenField.fill(right);
    await p.page.getByRole("button", { name: "Use token" }).click();
    const f = form(p.page, "hello");
    await f.waitFor();
    assert.equal(await form(p.page, "tree").count(), 0, "a command the token may not run is shown");
    assert.equal(await p.page.evaluate(() => sessionStorage.getItem("execgw.token")), right);
    await f.getByRole("button", { name: "Run", exact: true }).click();
    await f.getByRole("log").filter({ hasText: "hello world" }).waitFor();

    // Kept for the tab's session: a reload still has it.
    await p.page.reload();
    await form(p.page, "hello").waitFor();
    const sent = p.seen.requests.filter((r) => r.url().includes("/v1/")).map((r) => r.headers()["authorization"]);
    assert.ok(sent.includes("Bearer " + right));
    p.check(assert, [right, wrong]);
    await p.context.close();
  } finally {
    await authed.stop();
  }
});

test("screenshot for the README", async () => {
  // The commands view of a fresh page after one run, at a desktop width.
  const p = await openPage(browser, gw, { viewport: { width: 1200, height: 1250 } });
  const f = form(p.page, "hello");
  await f.getByRole("button", { name: "Run", exact: true }).click();
  await f.getByText(/Ended succeeded/).waitFor();
  const path = join(artifactDir, "readme.png");
  await p.page.screenshot({ path, fullPage: false });
  if (process.env.EXECGW_UPDATE_SCREENSHOT) copyFileSync(path, join(repoRoot, "docs/web-page.png"));
  p.check(assert);
  await p.context.close();
});
