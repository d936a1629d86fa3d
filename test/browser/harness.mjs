// The browser tests' harness: the real gateway binary on a free loopback
// port, Debian's chromium driven by playwright-core, and the process table
// read from /proc. Nothing here downloads a browser.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

// Screenshots go here; scripts/test keeps them as the run's artifacts.
export const artifactDir = process.env.EXECGW_ARTIFACTS || join(tmpdir(), "execgw-browser-artifacts");
mkdirSync(artifactDir, { recursive: true });

let binary = process.env.EXECGW_BIN || "";
let buildDir = "";

// gatewayBinary builds cmd/execgw once per test process, unless
// EXECGW_BIN names a binary already built.
export function gatewayBinary() {
  if (!binary) {
    buildDir = mkdtempSync(join(tmpdir(), "execgw-browser-bin-"));
    binary = join(buildDir, "execgw");
    execFileSync("go", ["build", "-o", binary, "./cmd/execgw"], { cwd: repoRoot, stdio: "inherit" });
  }
  return binary;
}

export function removeBuild() {
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
}

// startGateway writes config (YAML; listen, state_dir, log and a short
// shutdown_grace are added) into a temporary directory and starts the
// gateway on it. stop() sends SIGTERM and waits for the exit.
export async function startGateway(config) {
  const dir = mkdtempSync(join(tmpdir(), "execgw-browser-"));
  const full = "listen: 127.0.0.1:0\nstate_dir: ./state\nlog: {level: info, format: json}\nshutdown_grace: 1s\n" + config;
  writeFileSync(join(dir, "config.yaml"), full, { mode: 0o600 });
  const child = spawn(gatewayBinary(), ["serve", "--config", join(dir, "config.yaml")], {
    env: { PATH: process.env.PATH },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const exited = new Promise((res) => child.on("exit", (code, signal) => res({ code, signal })));
  const listening = new Promise((res, rej) => {
    const onData = (chunk) => {
      log += chunk;
      const line = log.split("\n").slice(0, -1).find((l) => l.includes('"message":"serving"'));
      if (line) res(JSON.parse(line).listen);
    };
    child.stderr.on("data", onData);
    child.stdout.on("data", onData);
    exited.then((e) => rej(new Error(`gateway exited (${JSON.stringify(e)}) before serving:\n${log}`)));
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 20000); // then "exited before serving"
  const listen = await listening.finally(() => clearTimeout(timer));
  const url = "http://" + listen;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(url + "/healthz")).ok) break;
    } catch (_) { /* not yet */ }
    if (i > 200) throw new Error("/healthz never answered");
    await sleep(25);
  }
  return {
    url,
    dir,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      let late = false;
      const timer = setTimeout(() => { late = true; child.kill("SIGKILL"); }, 30000);
      const e = await exited;
      clearTimeout(timer);
      if (late) throw new Error("gateway did not exit on SIGTERM:\n" + log);
      rmSync(dir, { recursive: true, force: true });
      if (e.code !== 0) throw new Error(`gateway exit ${JSON.stringify(e)}:\n${log}`);
    },
  };
}

// api calls the gateway's API directly, as curl would: to set up jobs and
// to read what happened to them.
export async function api(gw, path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers);
  if (opts.token) headers.Authorization = "Bearer " + opts.token;
  const resp = await fetch(gw.url + path, { method: opts.method || "GET", headers, body: opts.body });
  const text = await resp.text();
  if (!resp.ok && !opts.allowError) throw new Error(`${opts.method || "GET"} ${path}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// waitFor polls fn until it returns something truthy.
export async function waitFor(what, fn, timeoutMs = 10000, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(everyMs);
  }
}

// runningJob waits for the one running job of command and returns its record.
export async function runningJob(gw, command, token) {
  return waitFor(command + " running", async () => {
    const { jobs } = await api(gw, "/v1/jobs?state=running&command=" + command, { token });
    // A job is the leader of its process group: its pid is the group id.
    return jobs.length === 1 && jobs[0].pid ? jobs[0] : null;
  });
}

// groupMembers lists the live processes of process group pgid; zombies
// have exited and only wait to be reaped, so they do not count.
export function groupMembers(pgid) {
  const out = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${name}/stat`, "utf8"); } catch (_) { continue; }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (f[2] === String(pgid) && f[0] !== "Z" && f[0] !== "X") out.push(Number(name));
  }
  return out;
}

// groupGone waits (up to limitMs) for every process of pgid to be gone
// and returns how long that took from since (a performance.now() time).
// It watches the members it found first (reading every /proc entry takes
// milliseconds on a busy machine), then checks the whole group once more.
export async function groupGone(pgid, since, limitMs = 2000) {
  const members = groupMembers(pgid);
  const alive = (pid) => {
    try {
      return !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch (_) {
      return false;
    }
  };
  for (;;) {
    if (!members.some(alive) && groupMembers(pgid).length === 0) return performance.now() - since;
    if (performance.now() - since > limitMs) {
      throw new Error(`process group ${pgid} still has ${groupMembers(pgid)} after ${limitMs} ms`);
    }
    await new Promise((res) => setImmediate(res));
  }
}

// launchBrowser starts Debian's chromium, never a downloaded one.
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// openPage opens a page on the gateway and watches it: every request it
// makes, every console error, page error and CSP violation. check() fails
// the test if a request left the gateway's origin, a token appeared in a
// URL, or anything was reported (allowed: console errors matching it).
export async function openPage(browser, gw, opts = {}) {
  const context = await browser.newContext({ viewport: opts.viewport || { width: 1280, height: 900 }, isMobile: !!opts.isMobile });
  const page = await context.newPage();
  const seen = { requests: [], problems: [] };
  const origin = new URL(gw.url).origin;
  page.on("request", (r) => {
    seen.requests.push(r);
    if (new URL(r.url()).origin !== origin) seen.problems.push("request left the origin: " + r.url());
  });
  page.on("console", (m) => {
    if (m.type() === "error" && !(opts.allowConsole && opts.allowConsole.test(m.text()))) seen.problems.push("console: " + m.text());
  });
  page.on("pageerror", (e) => seen.problems.push("page error: " + e.message));
  await page.exposeBinding("__cspViolation", (_src, v) => seen.problems.push("CSP violation: " + v));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__cspViolation(e.violatedDirective + " " + e.blockedURI));
  });
  await page.goto(gw.url + (opts.path || "/"));
  return {
    page,
    context,
    seen,
    check(assert, secrets = []) {
      for (const r of seen.requests) {
        for (const s of secrets) assert.ok(!r.url().includes(s), "a secret appears in the URL " + r.url());
      }
      assert.deepEqual(seen.problems, []);
    },
  };
}

export async function screenshot(page, name) {
  const path = join(artifactDir, name + ".png");
  await page.screenshot({ path, fullPage: true });
  return path;
}
