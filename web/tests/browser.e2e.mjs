// @ts-check
// End-to-end test of the web client against a real `confab dev`, in Debian's Chromium
// driven by playwright-core. Run from the repository root:
//
//   CONFAB_BIN=target/debug/confab node --test web/tests/browser.e2e.mjs
//
// Environment:
//   CONFAB_BIN        path to the confab binary (required; the test fails without it)
//   CHROMIUM_PATH     browser executable (default /usr/bin/chromium)
//   CONFAB_E2E_WEB    "server" (default): the page comes from the binary at `/`;
//                     "disk": the browser gets web/ of this checkout instead (for a binary
//                     built before the last change to web/); REST and WSS still go to the
//                     real server
//   CONFAB_E2E_KEEP   set to keep the data directory afterwards
//
// Screenshots and the server's log go to test-output/web/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, createWriteStream, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WEB_DIR = path.resolve(HERE, '..');
const ROOT = path.resolve(WEB_DIR, '..');
const OUT_DIR = path.join(ROOT, 'test-output', 'web');
const BIN = process.env.CONFAB_BIN ? path.resolve(process.env.CONFAB_BIN) : '';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const WEB_SOURCE = process.env.CONFAB_E2E_WEB ?? 'server';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // With ignoreHTTPSErrors alone Chromium still opens some connections by rejecting the
  // local CA first (a TLS alert in the server's log each time); the test trusts it anyway.
  '--ignore-certificate-errors',
];
const PASSWORD = 'correct horse battery staple';

// A missing prerequisite fails the run: a browser test that quietly skips proves nothing.
const missing = !BIN
  ? 'set CONFAB_BIN to the confab binary to run the browser test'
  : !existsSync(BIN)
    ? `CONFAB_BIN=${BIN} does not exist`
    : !existsSync(CHROMIUM)
      ? `no browser at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`
      : null;
if (missing) throw new Error(missing);

// ---- helpers ------------------------------------------------------------------------

/** A TCP port that was free a moment ago; both server runs listen on it. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Retries `check` until it returns without throwing, or fails with its last error.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>} check
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
async function eventually(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  /** @type {unknown} */
  let last;
  while (Date.now() < deadline) {
    try {
      return await check();
    } catch (e) {
      last = e;
    }
    await sleep(150);
  }
  const detail = last instanceof Error ? last.message : String(last);
  throw new Error(`timed out waiting for ${what}: ${detail}`);
}

/** One `confab dev` process on a fixed port and data directory. */
class DevServer {
  /**
   * @param {string} dataDir
   * @param {number} port
   * @param {import('node:fs').WriteStream} log
   */
  constructor(dataDir, port, log) {
    this.dataDir = dataDir;
    this.port = port;
    this.log = log;
    /** @type {import('node:child_process').ChildProcess | null} */
    this.child = null;
    this.base = '';
  }

  /** Starts it and waits for its "listening" line and a healthy /healthz. */
  async start() {
    const child = spawn(BIN, ['dev', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info,pingora=warn' },
    });
    this.child = child;
    this.log.write(`\n==== start pid ${child.pid} ====\n`);
    child.stderr?.on('data', (d) => this.log.write(d));
    const base = await new Promise((resolve, reject) => {
      let buffer = '';
      const timer = setTimeout(() => reject(new Error('confab dev printed no "listening" line in 60 s')), 60_000);
      child.stdout?.on('data', (chunk) => {
        this.log.write(chunk);
        buffer += chunk.toString();
        const match = /confab dev listening on (https:\/\/[^\s]+)/.exec(buffer);
        if (match) {
          clearTimeout(timer);
          resolve(match[1].replace(/\/$/, ''));
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`confab dev exited early (code ${code}, signal ${signal}); see ${path.join(OUT_DIR, 'server.log')}`));
      });
    });
    this.base = base;
    this.ca = readFileSync(path.join(this.dataDir, 'tls', 'ca.pem'));
    await eventually('GET /healthz', async () => {
      const r = await this.request('GET', '/healthz');
      assert.equal(r.status, 200);
    });
  }

  /** SIGTERM (the server drains connections with goodbye), then waits for the exit. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(killer);
    this.child = null;
  }

  /**
   * A request to the server over HTTPS, trusting its local CA.
   * @param {string} method
   * @param {string} urlPath
   * @param {{body?: unknown, token?: string}} [options]
   * @returns {Promise<{status: number, text: string, json: any}>}
   */
  request(method, urlPath, options = {}) {
    return new Promise((resolve, reject) => {
      const body = options.body === undefined ? undefined : JSON.stringify(options.body);
      /** @type {Record<string, string>} */
      const headers = {};
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (options.token) headers.authorization = `Bearer ${options.token}`;
      const req = https.request(new URL(urlPath, this.base), { method, headers, ca: this.ca }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let json = null;
          try {
            json = JSON.parse(text);
          } catch {
            // not JSON (the page)
          }
          resolve({ status: res.statusCode ?? 0, text, json });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }
}

/**
 * Serves `/` and `/static/*` of this checkout to a browser context, for binaries that do
 * not embed the client (CONFAB_E2E_WEB=disk).
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} base
 */
async function serveWebFromDisk(context, base) {
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };
  await context.route(
    (url) => url.origin === base && (url.pathname === '/' || url.pathname.startsWith('/static/')),
    async (route) => {
      const { pathname } = new URL(route.request().url());
      const file = pathname === '/' ? path.join(WEB_DIR, 'index.html') : path.join(WEB_DIR, pathname);
      if (!file.startsWith(WEB_DIR) || !existsSync(file)) {
        await route.fulfill({ status: 404, body: 'not found' });
        return;
      }
      const ext = /** @type {keyof typeof types} */ (path.extname(file));
      await route.fulfill({ status: 200, contentType: types[ext] ?? 'application/octet-stream', body: await fs.readFile(file) });
    },
  );
}

/**
 * The data-seq values of the message list, in page order.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<number[]>}
 */
function pageSeqs(page) {
  return page.$$eval('[data-testid="message"]', (items) => items.map((li) => Number(li.getAttribute('data-seq'))));
}

/**
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
function pageTexts(page) {
  return page.$$eval('[data-testid="message"] [data-testid="message-text"]', (items) => items.map((el) => el.textContent ?? ''));
}

/**
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
async function screenshot(page, name) {
  await page.screenshot({ path: path.join(OUT_DIR, `${name}.png`) });
}

/**
 * Types into the composer and presses Enter.
 * @param {import('playwright-core').Page} page
 * @param {string} text
 */
async function send(page, text) {
  const composer = page.getByTestId('composer');
  await composer.fill(text);
  await composer.press('Enter');
}

/**
 * Waits until `page` shows a stored message with this text, and returns its seq.
 * @param {import('playwright-core').Page} page
 * @param {string} text
 */
async function seqOf(page, text) {
  const item = page.locator('[data-testid="message"]', { hasText: text });
  await item.first().waitFor({ timeout: 15_000 });
  return Number(await item.first().getAttribute('data-seq'));
}

/**
 * @param {import('playwright-core').Page} page
 * @param {string} channelId
 */
async function openConversation(page, channelId) {
  await page.locator(`[data-testid="channel-list"] [data-channel-id="${channelId}"] a`).click();
  await eventually('the conversation to open', async () => {
    assert.equal(await page.evaluate(() => location.hash), `#/c/${channelId}`);
  });
}

// ---- the scenario -------------------------------------------------------------------

test('two people chat in the browser, and the page survives a server restart', { timeout: 240_000 }, async (t) => {
  await fs.mkdir(OUT_DIR, { recursive: true });
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'confab-web-e2e-'));
  const log = createWriteStream(path.join(OUT_DIR, 'server.log'));
  const consoleLog = createWriteStream(path.join(OUT_DIR, 'browser-console.log'));
  const server = new DevServer(dataDir, await freePort(), log);
  /** @type {import('playwright-core').Browser | null} */
  let browser = null;
  /** @type {string[]} */
  const pageErrors = [];
  try {
    await server.start();
    const base = server.base;

    const fromDisk = WEB_SOURCE === 'disk';
    if (!fromDisk) {
      const index = await server.request('GET', '/');
      assert.ok(
        index.status === 200 && index.text.includes('data-testid="composer"'),
        `the server does not serve the web client at / (HTTP ${index.status}); ` +
          'embed web/ in the binary, or run with CONFAB_E2E_WEB=disk to test this checkout against it',
      );
      for (const file of ['app.js', 'api.js', 'state.js', 'style.css']) {
        const r = await server.request('GET', `/static/${file}`);
        assert.equal(r.status, 200, `/static/${file} is served`);
      }
    }

    // A page fulfilled by the test has no network address, so Chromium would treat it as
    // public and refuse its WebSocket to 127.0.0.1 (Local Network Access checks).
    const args = fromDisk ? [...CHROMIUM_ARGS, '--disable-features=LocalNetworkAccessChecks'] : CHROMIUM_ARGS;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
    /** @param {string} name */
    const newContext = async (name) => {
      const context = await /** @type {import('playwright-core').Browser} */ (browser).newContext({
        ignoreHTTPSErrors: true,
        viewport: { width: 1280, height: 800 },
      });
      if (fromDisk) await serveWebFromDisk(context, base);
      const page = await context.newPage();
      page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.name}: ${e.message}`));
      page.on('console', (m) => consoleLog.write(`[${name}] ${m.type()}: ${m.text()}\n`));
      return { context, page };
    };

    const domain = `e2e${Date.now().toString(36)}`;
    const { page: a } = await newContext('A');
    const { context: contextB, page: b } = await newContext('B');
    let channelId = '';
    let dmId = '';
    let adaId = '';
    let bobId = '';
    let adminToken = '';

    await t.test('A creates a workspace through the UI', async () => {
      await a.goto(`${base}/`);
      await a.getByTestId('login-submit').waitFor();
      await screenshot(a, 'login');
      await a.getByTestId('create-team-toggle').click();
      await a.getByTestId('create-team-name').fill('Acme E2E');
      await a.getByTestId('login-team').fill(domain);
      await a.getByTestId('create-name').fill('Ada Admin');
      await a.getByTestId('login-email').fill('ada@acme.test');
      await a.getByTestId('login-password').fill(PASSWORD);
      await a.getByTestId('login-submit').click();
      await a.getByTestId('empty-state').waitFor();
      assert.equal(await a.getByTestId('team-name').textContent(), 'Acme E2E');
      const session = await a.evaluate(() => JSON.parse(sessionStorage.getItem('confab.session') ?? 'null'));
      adminToken = session.token;
      adaId = session.userId;
      assert.ok(adminToken && adaId, 'the token is kept in sessionStorage');
    });

    await t.test('A creates #general', async () => {
      await a.getByTestId('new-channel').click();
      await a.getByTestId('new-channel-name').fill('general');
      await a.getByTestId('new-channel-submit').click();
      await eventually('#general in the header', async () => {
        assert.equal(await a.getByTestId('channel-title').textContent(), '#general');
      });
      const item = a.locator('[data-testid="channel-list"] [data-channel-id]', { hasText: 'general' });
      channelId = (await item.getAttribute('data-channel-id')) ?? '';
      assert.ok(channelId);
    });

    await t.test('the admin adds B over REST; B signs in and joins #general', async () => {
      const created = await server.request('POST', '/v1/users', {
        token: adminToken,
        body: { email: 'bob@acme.test', name: 'Bob Builder', password: PASSWORD },
      });
      assert.equal(created.status, 201, created.text);
      bobId = created.json.user.id;

      await b.goto(`${base}/`);
      await b.getByTestId('login-team').fill(domain);
      await b.getByTestId('login-email').fill('bob@acme.test');
      await b.getByTestId('login-password').fill('wrong password');
      await b.getByTestId('login-submit').click();
      await eventually('the login error', async () => {
        assert.match((await b.getByTestId('auth-error').textContent()) ?? '', /wrong team, email or password/);
      });
      await b.getByTestId('login-password').fill(PASSWORD);
      await b.getByTestId('login-submit').click();
      await b.getByTestId('empty-state').waitFor();

      await b.getByTestId('browse-channels').click();
      await b.locator(`[data-testid="join-channel"][data-channel-id="${channelId}"]`).click();
      await eventually('#general open for B', async () => {
        assert.equal(await b.getByTestId('channel-title').textContent(), '#general');
      });
    });

    await t.test('messages go both ways in the channel, in seq order', async () => {
      await send(a, 'Hello from Ada');
      assert.equal(await seqOf(a, 'Hello from Ada'), 1);
      assert.equal(await seqOf(b, 'Hello from Ada'), 1);
      await send(b, 'Hi Ada, Bob here');
      assert.equal(await seqOf(b, 'Hi Ada, Bob here'), 2);
      assert.equal(await seqOf(a, 'Hi Ada, Bob here'), 2);
      const composer = a.getByTestId('composer');
      await composer.fill('First line');
      await composer.press('Shift+Enter');
      await composer.pressSequentially('second line');
      await composer.press('Enter');
      assert.equal(await seqOf(b, 'second line'), 3);
      assert.equal((await pageTexts(b))[2], 'First line\nsecond line', 'Shift+Enter is a newline');
      assert.deepEqual(await pageSeqs(b), [1, 2, 3]);
      assert.equal(await a.getByTestId('pending-message').count(), 0);
    });

    await t.test('B sees A typing and A present', async () => {
      await a.getByTestId('composer').pressSequentially('I am typ', { delay: 20 });
      await eventually('the typing indicator', async () => {
        assert.equal(await b.getByTestId('typing-indicator').textContent(), 'Ada Admin is typing…');
      });
      await a.getByTestId('composer').fill('');
      const dot = b.locator(`[data-testid="message"][data-user-id="${adaId}"] [data-testid="presence-dot"]`).first();
      await eventually("A's presence dot", async () => {
        assert.equal(await dot.getAttribute('data-presence'), 'active');
      });
      await eventually('the typing indicator to clear', async () => {
        assert.equal(await b.getByTestId('typing-indicator').textContent(), '');
      }, 10_000);
      await screenshot(b, 'channel');
    });

    await t.test('A starts a DM with B; unread badges come and go', async () => {
      await a.getByTestId('new-dm').click();
      await a.locator(`[data-testid="people-option"][data-user-id="${bobId}"]`).check();
      await a.getByTestId('people-submit').click();
      await eventually('the DM in the header', async () => {
        assert.equal(await a.getByTestId('channel-title').textContent(), 'Bob Builder');
      });
      dmId = (await a.evaluate(() => decodeURIComponent(location.hash.replace('#/c/', '')))) ?? '';
      assert.ok(dmId);
      await send(a, 'Psst, a direct message');
      assert.equal(await seqOf(a, 'Psst, a direct message'), 1);

      const dmItem = b.locator(`[data-testid="channel-list"] [data-channel-id="${dmId}"]`);
      await dmItem.waitFor();
      await eventually('the DM unread badge', async () => {
        assert.equal(await dmItem.getByTestId('unread-badge').textContent(), '1');
        assert.equal(await dmItem.getByTestId('unread-badge').isVisible(), true);
      });
      await eventually('the presence dot of A in B’s sidebar', async () => {
        assert.equal(await dmItem.getByTestId('presence-dot').getAttribute('data-presence'), 'active');
      });
      await openConversation(b, dmId);
      assert.equal(await seqOf(b, 'Psst, a direct message'), 1);
      assert.equal(await dmItem.getByTestId('unread-badge').isVisible(), false);
      await send(b, 'Got it, replying in the DM');
      assert.equal(await seqOf(a, 'Got it, replying in the DM'), 2);
      await screenshot(b, 'dm');

      // While B reads the DM, A writes in #general: B's #general shows 1 unread.
      await openConversation(a, channelId);
      await send(a, 'Back in general');
      const general = b.locator(`[data-testid="channel-list"] [data-channel-id="${channelId}"]`);
      await eventually('the #general unread badge', async () => {
        assert.equal(await general.getByTestId('unread-badge').textContent(), '1');
      });
      await openConversation(b, channelId);
      assert.equal(await seqOf(b, 'Back in general'), 4);
      await eventually('the badge to clear', async () => {
        assert.equal(await general.getByTestId('unread-badge').isVisible(), false);
      });
    });

    await t.test('a private channel: A adds B by user id, B reads and leaves', async () => {
      await a.getByTestId('new-channel').click();
      await a.getByTestId('new-channel-name').fill('secret-plans');
      await a.getByTestId('new-channel-private').check();
      await a.getByTestId('new-channel-submit').click();
      await eventually('the private channel in the header', async () => {
        assert.equal(await a.getByTestId('channel-title').textContent(), '🔒 secret-plans');
      });
      const privateId = await a.evaluate(() => decodeURIComponent(location.hash.replace('#/c/', '')));
      await a.getByTestId('add-members').click();
      await a.getByTestId('people-ids').fill(bobId);
      await a.getByTestId('people-submit').click();
      await a.getByTestId('toast').filter({ hasText: 'Added Bob Builder' }).waitFor();
      await send(a, 'Only for the two of us');

      const item = b.locator(`[data-testid="channel-list"] [data-channel-id="${privateId}"]`);
      await eventually('the private channel in B’s sidebar with 1 unread', async () => {
        assert.equal(await item.getByTestId('unread-badge').textContent(), '1');
      });
      await openConversation(b, privateId);
      assert.equal(await seqOf(b, 'Only for the two of us'), 1);
      b.once('dialog', (dialog) => void dialog.accept());
      await b.getByTestId('leave-channel').click();
      await item.waitFor({ state: 'detached' });
      await openConversation(a, channelId);
    });

    await t.test('scrolling up loads older history, a page at a time', async () => {
      const created = await server.request('POST', '/v1/channels', { token: adminToken, body: { name: 'archive', private: false } });
      assert.equal(created.status, 201, created.text);
      const archiveId = created.json.channel.id;
      for (let i = 1; i <= 120; i++) {
        const r = await server.request('POST', '/v1/messages', {
          token: adminToken,
          body: { channel: archiveId, text: `Archived message ${i}`, client_msg_id: `e2e-archive-${i}` },
        });
        assert.equal(r.status, 201, r.text);
      }
      const bobToken = await b.evaluate(() => JSON.parse(sessionStorage.getItem('confab.session') ?? '{}').token);
      const joined = await server.request('POST', `/v1/channels/${archiveId}/join`, { token: bobToken });
      assert.equal(joined.status, 200, joined.text);

      const item = b.locator(`[data-testid="channel-list"] [data-channel-id="${archiveId}"]`);
      await eventually('#archive in B’s sidebar with its unread count', async () => {
        assert.equal(await item.getByTestId('unread-badge').textContent(), '99+');
      });
      await openConversation(b, archiveId);
      const range = (/** @type {number} */ from, /** @type {number} */ to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
      await eventually('the latest page', async () => {
        assert.deepEqual(await pageSeqs(b), range(71, 120));
      });
      const box = b.locator('#messages');
      await box.evaluate((el) => {
        el.scrollTop = 0;
      });
      await eventually('the second page', async () => {
        assert.deepEqual(await pageSeqs(b), range(21, 120));
      });
      assert.ok((await box.evaluate((el) => el.scrollTop)) > 0, 'the view stays where it was, not at the new top');
      await box.evaluate((el) => {
        el.scrollTop = 0;
      });
      await eventually('the whole channel', async () => {
        assert.deepEqual(await pageSeqs(b), range(1, 120));
        assert.equal(await b.getByTestId('history-status').textContent(), 'This is the very beginning of #archive.');
      });
      await openConversation(b, channelId);
    });

    await t.test('a server restart: Reconnecting…, then every message exactly once, in order', async () => {
      // B's browser also goes offline, so B comes back only after others have written:
      // what B missed must arrive through resume, A's may come either way.
      await contextB.setOffline(true);
      await server.stop();
      for (const [name, page] of /** @type {const} */ ([['A', a], ['B', b]])) {
        await eventually(`the reconnecting banner on ${name}`, async () => {
          assert.equal(await page.getByTestId('connection-banner').isVisible(), true);
          assert.match((await page.getByTestId('connection-banner').textContent()) ?? '', /Reconnecting…/);
        });
      }
      // Written while the server is down: it waits, then goes out once.
      await send(b, 'Written while the server was down');
      await b.getByTestId('pending-message').waitFor();
      await screenshot(b, 'reconnecting');

      await server.start();
      // Others keep talking while the pages find their way back.
      for (let i = 1; i <= 3; i++) {
        const r = await server.request('POST', '/v1/messages', {
          token: adminToken,
          body: { channel: channelId, text: `Posted during the reconnect #${i}`, client_msg_id: `e2e-restart-${i}` },
        });
        assert.equal(r.status, 201, r.text);
      }

      await eventually('A to reconnect', async () => {
        assert.equal(await a.getByTestId('connection-banner').isVisible(), false);
      }, 30_000);
      await eventually('A to show the messages posted meanwhile', async () => {
        assert.equal(await a.locator('[data-testid="message"]', { hasText: 'Posted during the reconnect' }).count(), 3);
      });
      assert.equal(await b.getByTestId('connection-banner').isVisible(), true, 'B is still offline');
      await contextB.setOffline(false);
      await eventually('B to reconnect', async () => {
        assert.equal(await b.getByTestId('connection-banner').isVisible(), false);
      }, 30_000);
      const history = await server.request('GET', `/v1/channels/${channelId}/history?limit=200`, { token: adminToken });
      assert.equal(history.status, 200);
      /** @type {Array<{seq: number, text: string}>} */
      let stored = history.json.messages.slice().reverse();
      await eventually('the offline message to be stored', async () => {
        const again = await server.request('GET', `/v1/channels/${channelId}/history?limit=200`, { token: adminToken });
        stored = again.json.messages.slice().reverse();
        assert.ok(stored.some((m) => m.text === 'Written while the server was down'));
      });
      const expectedSeqs = stored.map((m) => m.seq);
      assert.deepEqual(expectedSeqs, Array.from({ length: expectedSeqs.length }, (_, i) => i + 1), 'dense seqs');
      assert.equal(stored.filter((m) => m.text === 'Written while the server was down').length, 1, 'sent once');

      for (const [name, page] of /** @type {const} */ ([['A', a], ['B', b]])) {
        await eventually(`${name} to show all ${expectedSeqs.length} messages`, async () => {
          assert.deepEqual(await pageSeqs(page), expectedSeqs);
          assert.equal(await page.getByTestId('pending-message').count(), 0);
        }, 30_000);
        assert.deepEqual(await pageTexts(page), stored.map((m) => m.text), `${name}: texts in seq order`);
      }

      // The DM is intact as well.
      await openConversation(a, dmId);
      await eventually('the DM after the restart', async () => {
        assert.deepEqual(await pageSeqs(a), [1, 2]);
      });
      // New messages still flow after the restart.
      await openConversation(a, channelId);
      await send(a, 'After the restart');
      const next = expectedSeqs.length + 1;
      assert.equal(await seqOf(b, 'After the restart'), next);
      assert.deepEqual(await pageSeqs(b), [...expectedSeqs, next]);
    });

    await t.test('a reload keeps the session (per tab) and the order', async () => {
      const before = await pageSeqs(b);
      await b.reload();
      await eventually('the channel after reload', async () => {
        assert.equal(await b.getByTestId('channel-title').textContent(), '#general');
        assert.deepEqual(await pageSeqs(b), before);
      });
    });

    await t.test('a phone-width window collapses the sidebar', async () => {
      await b.setViewportSize({ width: 390, height: 780 });
      assert.equal(await b.getByTestId('sidebar-toggle').isVisible(), true);
      await eventually('the sidebar to tuck away', async () => {
        const box = await b.locator('#sidebar').boundingBox();
        assert.ok(box && box.x + box.width <= 0, 'the sidebar is off screen');
      });
      await screenshot(b, 'mobile');
      await b.getByTestId('sidebar-toggle').click();
      await eventually('the drawer', async () => {
        const box = await b.locator('#sidebar').boundingBox();
        assert.ok(box && box.x >= -1, 'the sidebar slides in');
      });
      await screenshot(b, 'mobile-sidebar');
      await b.keyboard.press('Escape');
      await eventually('Escape to close the drawer', async () => {
        assert.equal(await b.getByTestId('sidebar-toggle').getAttribute('aria-expanded'), 'false');
      });
    });

    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  } finally {
    await browser?.close().catch(() => {});
    consoleLog.end();
    await server.stop().catch(() => {});
    log.end();
    if (!process.env.CONFAB_E2E_KEEP) {
      await fs.rm(dataDir, { recursive: true, force: true }).catch(() => {});
    }
  }
});
