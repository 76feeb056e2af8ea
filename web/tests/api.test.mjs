// @ts-check
// Unit tests of the RTM client (web/static/api.js) against a scripted WebSocket stand-in,
// with Node's mock timers for backoff, pings and reply timeouts: run with
// `node --test web/tests/`. The real server is exercised by browser.e2e.mjs.

import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, RtmClient, backoffDelay, rtmUrl, PING_EVERY_MS } from '../static/api.js';

/** A WebSocket stand-in the test drives: it records what is sent and replays frames. */
class ScriptedSocket {
  /** @type {ScriptedSocket[]} */
  static all = [];

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    /** @type {any[]} */
    this.sent = [];
    this.closed = false;
    /** @type {((e: {data: unknown}) => void) | null} */
    this.onmessage = null;
    /** @type {(() => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
    ScriptedSocket.all.push(this);
  }

  /** @param {string} data */
  send(data) {
    if (this.closed) throw new Error('closed');
    this.sent.push(JSON.parse(data));
  }

  close() {
    this.closed = true;
  }

  /** @param {unknown} frame */
  deliver(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server or network ends the connection. */
  drop() {
    this.closed = true;
    this.onclose?.();
  }

  static last() {
    return ScriptedSocket.all[ScriptedSocket.all.length - 1];
  }
}

function setup() {
  ScriptedSocket.all = [];
  /** @type {Array<{status: string, retryInMs?: number}>} */
  const statuses = [];
  /** @type {any[]} */
  const events = [];
  let opens = 0;
  const client = new RtmClient({
    url: () => 'wss://example.test/v1/rtm?token=t',
    onEvent: (e) => events.push(e),
    onStatus: (status, detail) => statuses.push({ status, retryInMs: detail.retryInMs }),
    onOpen: () => {
      opens++;
    },
    WebSocketImpl: /** @type {any} */ (ScriptedSocket),
    random: () => 0.5,
  });
  return { client, statuses, events, opens: () => opens };
}

test('backoff grows exponentially with jitter, up to a cap', () => {
  assert.equal(backoffDelay(0, 0), 250);
  assert.equal(backoffDelay(0, 0.999), 500);
  assert.equal(backoffDelay(3, 0), 2000);
  assert.equal(backoffDelay(3, 1), 4000);
  assert.equal(backoffDelay(50, 0), 7500);
  assert.equal(backoffDelay(50, 1), 15000);
  for (let attempt = 0; attempt < 10; attempt++) {
    const d = backoffDelay(attempt);
    assert.ok(d >= backoffDelay(attempt, 0) && d <= backoffDelay(attempt, 1));
  }
});

test('the RTM URL follows the page: wss for https, token in the query', () => {
  assert.equal(rtmUrl(new URL('https://chat.test:8443/'), 'a b'), 'wss://chat.test:8443/v1/rtm?token=a%20b');
  assert.equal(rtmUrl(new URL('http://localhost:3000/x'), 't'), 'ws://localhost:3000/v1/rtm?token=t');
});

test('commands get increasing ids; replies resolve or reject them', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client, statuses, events, opens } = setup();
    client.start();
    assert.equal(statuses[0].status, 'connecting');
    await assert.rejects(client.request({ type: 'ping' }), { code: 'not_connected' }, 'nothing before hello');
    const ws = ScriptedSocket.last();
    ws.deliver({ type: 'hello' });
    assert.equal(client.isOpen(), true);
    assert.equal(opens(), 1);
    assert.deepEqual(events, [], 'hello is not passed on');

    const sent = client.request({ type: 'message', channel: 'C1', text: 'hi', client_msg_id: 'x' });
    const marked = client.request({ type: 'mark', channel: 'C1', seq: 3 });
    assert.deepEqual(ws.sent, [
      { id: 1, type: 'message', channel: 'C1', text: 'hi', client_msg_id: 'x' },
      { id: 2, type: 'mark', channel: 'C1', seq: 3 },
    ]);
    ws.deliver({ reply_to: 2, ok: false, error: { code: 'not_in_channel', msg: 'join first' } });
    ws.deliver({ reply_to: 1, ok: true, message: { seq: 7 } });
    assert.deepEqual((await sent).message, { seq: 7 });
    await assert.rejects(marked, (e) => e instanceof ApiError && e.code === 'not_in_channel' && e.message === 'join first');

    ws.deliver({ type: 'user_typing', channel: 'C1', user: 'U2' });
    assert.deepEqual(events, [{ type: 'user_typing', channel: 'C1', user: 'U2' }]);
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('a command without a reply in time fails with timeout', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client } = setup();
    client.start();
    ScriptedSocket.last().deliver({ type: 'hello' });
    const pending = client.request({ type: 'ping' }, { timeoutMs: 1000 });
    mock.timers.tick(1000);
    await assert.rejects(pending, { code: 'timeout' });
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('a dropped connection fails what waits, and reconnects after a backoff', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client, statuses, opens } = setup();
    client.start();
    const first = ScriptedSocket.last();
    first.deliver({ type: 'hello' });
    const waiting = client.request({ type: 'resume', cursors: { C1: 4 } });
    first.drop();
    await assert.rejects(waiting, { code: 'connection_lost' });
    const last = statuses[statuses.length - 1];
    assert.equal(last.status, 'reconnecting');
    assert.equal(last.retryInMs, backoffDelay(0, 0.5));
    assert.equal(ScriptedSocket.all.length, 1);

    mock.timers.tick(backoffDelay(0, 0.5));
    assert.equal(ScriptedSocket.all.length, 2, 'a new socket after the delay');
    // It fails before hello: the next wait is longer.
    ScriptedSocket.last().drop();
    assert.equal(statuses[statuses.length - 1].retryInMs, backoffDelay(1, 0.5));
    mock.timers.tick(backoffDelay(1, 0.5));
    const third = ScriptedSocket.last();
    assert.equal(ScriptedSocket.all.length, 3);
    third.deliver({ type: 'hello' });
    assert.equal(opens(), 2, 'onOpen runs again: the app resumes there');
    assert.equal(client.isOpen(), true);
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('goodbye closes the socket and comes back quickly', () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client, events } = setup();
    client.start();
    const ws = ScriptedSocket.last();
    ws.deliver({ type: 'hello' });
    ws.deliver({ type: 'goodbye', reason: 'server_shutdown' });
    assert.equal(ws.closed, true);
    assert.deepEqual(events, [{ type: 'goodbye', reason: 'server_shutdown' }]);
    assert.equal(client.status, 'reconnecting');
    mock.timers.tick(backoffDelay(0, 0.5));
    assert.equal(ScriptedSocket.all.length, 2);
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('pings every 30 s; a ping without pong counts as a dead connection', () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client } = setup();
    client.start();
    const ws = ScriptedSocket.last();
    ws.deliver({ type: 'hello' });
    mock.timers.tick(PING_EVERY_MS);
    assert.deepEqual(ws.sent, [{ id: 1, type: 'ping' }]);
    ws.deliver({ reply_to: 1, ok: true, type: 'pong' });
    mock.timers.tick(PING_EVERY_MS);
    assert.deepEqual(ws.sent[1], { id: 2, type: 'ping' });
    assert.equal(client.isOpen(), true);
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('interrupt drops a silent socket at once and reconnects', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client, statuses } = setup();
    client.start();
    const ws = ScriptedSocket.last();
    ws.deliver({ type: 'hello' });
    const waiting = client.request({ type: 'ping' });
    client.interrupt('browser offline');
    assert.equal(ws.closed, true);
    await assert.rejects(waiting, { code: 'connection_lost' });
    assert.equal(statuses[statuses.length - 1].status, 'reconnecting');
    mock.timers.tick(backoffDelay(0, 0.5));
    assert.equal(ScriptedSocket.all.length, 2);
    client.stop();
  } finally {
    mock.timers.reset();
  }
});

test('stop closes for good', () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const { client, statuses } = setup();
    client.start();
    const ws = ScriptedSocket.last();
    ws.deliver({ type: 'hello' });
    client.stop();
    assert.equal(ws.closed, true);
    assert.equal(statuses[statuses.length - 1].status, 'stopped');
    mock.timers.tick(60_000);
    assert.equal(ScriptedSocket.all.length, 1, 'no reconnect after stop');
  } finally {
    mock.timers.reset();
  }
});
