// The browser tests' harness: a whole shop (`$SHOP_BIN up`) on free loopback ports, Debian's
// Chromium through playwright-core, and the checks every journey page gets (screenshot, axe scan,
// requests and console recorded, bytes transferred).
import { spawn } from 'node:child_process';
import { after, before } from 'node:test';
import {
  copyFileSync, createWriteStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

export const PASSWORD = 'correct-horse-battery-1';
// Set explicitly so an admin for setting stock exists whatever the caller's environment says.
export const ADMIN_EMAIL = 'admin@shop.test';

function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A base port with base..base+12 free on 127.0.0.1: `shop up` gives the gateway base and the
 * other nine services the next ports (user, catalog, …, notification, storefront); 3 spare.
 * Below Linux's ephemeral range (32768 and up): a port found free there can be taken by an
 * outgoing connection before `shop up` binds it (it happened: "Address already in use").
 */
async function freeBasePort() {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Random, so test files (and parallel runs) rarely try the same range.
    const base = 20000 + Math.floor(Math.random() * 12000);
    let free = true;
    for (let p = base; p <= base + 12 && free; p++) free = await portFree(p);
    if (free) return base;
  }
  throw new Error('no 13 free consecutive ports on 127.0.0.1');
}

/** Is `pid` still one of our shop's processes (not a reused pid of something else)? */
function isOurs(pid, bin) {
  try {
    return readlinkSync(`/proc/${pid}/exe`) === realpathSync(bin);
  } catch {
    return false;
  }
}

/** The pids whose parent is `parent` (read from /proc: the services `shop up` started). */
function childrenOf(parent) {
  const kids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // "pid (comm) state ppid ...": comm may hold spaces, so split after its closing paren.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent) kids.push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  return kids;
}

/** SIGKILL for `shop up` and the services it started; nothing else (SIGKILL skips its cleanup). */
function killAll(upPid, bin) {
  const pids = [...childrenOf(upPid), upPid]; // before it dies: then they are no longer its children
  for (const pid of pids) if (isOurs(pid, bin)) process.kill(pid, 'SIGKILL');
}

/**
 * Starts `$SHOP_BIN up` in a fresh data folder and waits for its summary table.
 * Returns { url, pids: {service: pid}, logFile, kill(service), stop() }.
 */
export async function startShop() {
  const bin = process.env.SHOP_BIN;
  if (!bin) throw new Error('SHOP_BIN is not set (tests/browser/run.sh sets it)');
  const base = await freeBasePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'shop-browser-'));
  const logFile = join(dataDir, 'shop-up.log');
  const log = createWriteStream(logFile);
  const child = spawn(bin, ['up', '--data-dir', dataDir, '--port', String(base), '--host', '127.0.0.1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SHOP_ADMIN_EMAILS: ADMIN_EMAIL },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; log.write(d); });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  // The summary's rows: "  <service> <http://address> <pid> <data>"; printed once all are ready.
  const pids = {};
  let stdout = '';
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      log.write(d);
      stdout += d;
      for (const m of stdout.matchAll(/^ {2}(\w+) +(http:\/\/\S+) +(\d+) /gm)) pids[m[1]] = Number(m[3]);
      if (/data folder:/.test(stdout)) resolve();
    });
    exited.then(({ code, signal }) => reject(new Error(
      `shop up exited before it was ready (${code ?? signal}); its log:\n${stderr.slice(-4000)}`)));
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`shop up not ready within 60 s; log: ${logFile}`)), 60_000);
  });
  try {
    await Promise.race([ready, timeout]);
  } catch (e) {
    killAll(child.pid, bin);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const url = `http://127.0.0.1:${base}`;
  console.log(`# shop up (pid ${child.pid}) at ${url}: ${JSON.stringify(pids)}; log ${logFile}`);

  return {
    url,
    pids,
    logFile,
    /** SIGKILLs one service (as if it crashed) and waits until `shop up` has seen it exit. */
    async kill(service) {
      const pid = pids[service];
      if (!pid || !isOurs(pid, bin)) throw new Error(`no running ${service} of ours (pid ${pid})`);
      process.kill(pid, 'SIGKILL');
      const deadline = Date.now() + 10_000;
      while (!stderr.includes(`${service} exited`)) {
        if (Date.now() > deadline) throw new Error(`shop up did not report ${service} exiting`);
        await sleep(20);
      }
      delete pids[service];
    },
    /** SIGTERM to `shop up` (it stops its services); SIGKILL only ours if they outstay 15 s. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const grace = new AbortController();
      const done = await Promise.race([exited.then(() => true),
        sleep(15_000, false, { signal: grace.signal }).catch(() => false)]);
      grace.abort();
      if (!done) {
        killAll(child.pid, bin);
        await exited;
      }
      await new Promise((resolve) => log.end(resolve));
      // The log goes beside the screenshots (kept, as CI artifacts are); the data folder goes.
      const kept = join(screenshotsRoot(), `shop-up-${base}.log`);
      copyFileSync(logFile, kept);
      console.log(`# shop up's log: ${kept}`);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A shop and a browser for the tests of one file: started before them, stopped after them. */
export function shopAndBrowser() {
  const running = {};
  before(async () => {
    [running.shop, running.browser] = await Promise.all([startShop(), launchBrowser()]);
  });
  after(async () => {
    await running.browser?.close();
    await running.shop?.stop();
  });
  return running;
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.SHOP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in CI: Chromium's sandbox refuses to run as root.
    args: ['--no-sandbox'],
  });
}

function screenshotsRoot() {
  const root = process.env.SHOP_BROWSER_SCREENSHOTS || join(tmpdir(), 'shop-browser-screenshots');
  mkdirSync(root, { recursive: true });
  return root;
}

/** The screenshot folder for `name` (created fresh), under SHOP_BROWSER_SCREENSHOTS. */
export function shotsDir(name) {
  const dir = join(screenshotsRoot(), name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Watches a browser context: every request (to check the origin), console errors, and the bytes
 * transferred for each page (a bucket per main-frame navigation: the document and what it loaded).
 */
export function record(context) {
  const rec = { requests: [], consoleErrors: [], buckets: [] };
  const bucketOf = new WeakMap();
  context.on('request', (r) => {
    rec.requests.push(r.url());
    if (r.isNavigationRequest() && r.frame().parentFrame() === null) rec.buckets.push([]);
    bucketOf.set(r, rec.buckets.at(-1));
  });
  context.on('requestfinished', (r) => bucketOf.get(r)?.push(r.sizes().then((s) => ({
    type: r.resourceType(), bytes: s.responseBodySize + s.responseHeadersSize,
  }))));
  context.on('console', (m) => {
    if (m.type() === 'error') rec.consoleErrors.push(`${m.location().url}: ${m.text()}`);
  });
  context.on('weberror', (e) => rec.consoleErrors.push(`uncaught: ${e.error().message}`));
  /** What the last page transferred: {page: everything but images, images}. */
  rec.lastPageWeight = async () => {
    const all = await Promise.all(rec.buckets.at(-1) ?? []);
    const sum = (f) => all.filter(f).reduce((n, s) => n + s.bytes, 0);
    return { page: sum((s) => s.type !== 'image'), images: sum((s) => s.type === 'image') };
  };
  return rec;
}

/** A page that fetches everything on every visit, so each page's weight is a first visit's. */
export async function uncachedPage(context) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page); // Chromium's own switch; playwright has none
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  return page;
}

/** The axe-core scan of the page as it is: violations at the WCAG 2.0/2.1 A and AA tags. */
export async function axeViolations(page) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern.
  await page.evaluate(require('axe-core').source);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
  }));
  return result.violations;
}

export function formatViolations(label, violations) {
  return violations.map((v) => `${label}: [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})\n` +
    v.nodes.slice(0, 5).map((n) => `    ${n.target.join(' ')}: ${n.failureSummary?.split('\n').join(' ')}`).join('\n'))
    .join('\n');
}

/** A new account through the register page; returns its email. */
export async function register(page, url) {
  await page.goto(`${url}/register`);
  return submitRegistration(page);
}

/** Fills and sends the open register page with a new, unique account; returns its email. */
export async function submitRegistration(page, name = 'Test Shopper') {
  const email = `shopper-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.test`;
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL((u) => !u.pathname.startsWith('/register'));
  return email;
}

/** A JSON call to the shop's public API through the gateway (test setup, not what is tested). */
export async function api(url, method, path, body, token) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** An access token for the admin account (registered on first use). */
export async function adminToken(url) {
  try {
    await api(url, 'POST', '/api/users', { email: ADMIN_EMAIL, password: PASSWORD, name: 'Admin' });
  } catch (e) {
    if (!/\b409\b/.test(e.message)) throw e;
  }
  return (await api(url, 'POST', '/api/auth/login', { email: ADMIN_EMAIL, password: PASSWORD })).access_token;
}

/** The product page of `name` (a seed product), reached by searching for it. */
export async function openProduct(page, url, name) {
  await page.goto(`${url}/search?q=${encodeURIComponent(name)}`);
  await page.getByRole('main').getByRole('link', { name, exact: true }).first().click();
  await page.waitForURL(/\/product\//);
  await page.getByRole('heading', { level: 1, name, exact: true }).waitFor();
  return new URL(page.url()).pathname.split('/').pop();
}

/** Adds `quantity` of the product whose page is open; lands on /cart. */
export async function addToCart(page, quantity = 1) {
  await page.getByLabel('Quantity', { exact: true }).fill(String(quantity));
  await page.getByRole('button', { name: 'Add to cart' }).click();
  await page.waitForURL(/\/cart(\?|$)/);
}

/** Fills the checkout form (the page is open) with an address in Germany and `card`. */
export async function fillCheckout(page, card) {
  const fields = {
    'Full name': 'Erika Mustermann',
    Address: 'Unter den Linden 1',
    'Address line 2': '3rd floor',
    City: 'Berlin',
    'Postal code': '10117',
    Country: 'DE',
    'Card number': card,
    'Expiry month': '12',
    'Expiry year': String(new Date().getFullYear() + 2),
    CVC: '123',
  };
  for (const [label, value] of Object.entries(fields)) {
    await page.getByLabel(label, { exact: true }).fill(value);
  }
  return fields;
}

/** The header's main navigation (where Cart, Orders, Inbox, Register, Sign in are). */
export const nav = (page) => page.getByRole('navigation', { name: 'Main' });
