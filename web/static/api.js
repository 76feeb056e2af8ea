// @ts-check
/**
 * @file The client side of public API v1 (DESIGN.md §5) and nothing else: REST calls with
 * the bearer token, and the RTM WebSocket with command ids, replies, keep-alive pings and
 * reconnection with exponential backoff and jitter. What to do after a reconnect (boot,
 * resume, resend) is the app's decision; this module only says that it happened.
 */

/** @typedef {import('./state.js').Message} Message */
/** @typedef {import('./state.js').User} User */
/** @typedef {import('./state.js').Team} Team */
/** @typedef {import('./state.js').Channel} Channel */
/** @typedef {import('./state.js').Boot} Boot */
/** @typedef {import('./state.js').Presence} Presence */

/** An error as the API reports it: a stable `code` and a human `msg`. */
export class ApiError extends Error {
  /**
   * @param {string} code snake_case code from the server, or a client-side one
   *   (`network`, `timeout`, `connection_lost`, `not_connected`)
   * @param {string} msg
   * @param {number} [status] HTTP status, 0 when there was no answer
   */
  constructor(code, msg, status = 0) {
    super(msg);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
  }
}

/**
 * @param {unknown} body
 * @param {string} fallback
 * @returns {{code: string, msg: string}}
 */
function errorOf(body, fallback) {
  if (body && typeof body === 'object' && 'error' in body) {
    const e = /** @type {{error: unknown}} */ (body).error;
    if (e && typeof e === 'object') {
      const { code, msg } = /** @type {{code?: unknown, msg?: unknown}} */ (e);
      return {
        code: typeof code === 'string' ? code : 'unknown',
        msg: typeof msg === 'string' && msg ? msg : fallback,
      };
    }
  }
  return { code: 'unknown', msg: fallback };
}

// ---- REST ---------------------------------------------------------------------------

/**
 * @typedef {object} HistoryPage
 * @property {Message[]} messages newest first
 * @property {boolean} has_more
 */

/** REST v1 over `fetch`. */
export class RestClient {
  /**
   * @param {object} [options]
   * @param {string} [options.base] origin of the API; the page's own by default
   * @param {string | null} [options.token]
   * @param {(error: ApiError) => void} [options.onUnauthorized] called on `not_authed`
   */
  constructor(options = {}) {
    this.base = options.base ?? '';
    /** @type {string | null} */
    this.token = options.token ?? null;
    this.onUnauthorized = options.onUnauthorized;
  }

  /**
   * @template T
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<T>}
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
    }
    if (this.token) {
      headers.authorization = `Bearer ${this.token}`;
    }
    /** @type {Response} */
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError('network', 'Cannot reach the server. Check your connection.', 0);
    }
    /** @type {unknown} */
    let parsed = null;
    const text = await response.text().catch(() => '');
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
    }
    if (!response.ok) {
      const { code, msg } = errorOf(parsed, `The server answered ${response.status}.`);
      const error = new ApiError(code, msg, response.status);
      if (code === 'not_authed' && this.token) {
        this.onUnauthorized?.(error);
      }
      throw error;
    }
    return /** @type {T} */ (parsed);
  }

  /**
   * @param {{name: string, domain: string, owner: {email: string, name: string, password: string}}} req
   * @returns {Promise<{team: Team, user: User, token: string}>}
   */
  createTeam(req) {
    return this.request('POST', '/v1/teams', req);
  }

  /**
   * @param {{team: string, email: string, password: string}} req
   * @returns {Promise<{token: string, user: User}>}
   */
  login(req) {
    return this.request('POST', '/v1/auth/login', req);
  }

  /**
   * Team admins only.
   * @param {{email: string, name: string, password: string}} req
   * @returns {Promise<{user: User}>}
   */
  createUser(req) {
    return this.request('POST', '/v1/users', req);
  }

  /** @returns {Promise<Boot>} */
  boot() {
    return this.request('GET', '/v1/boot');
  }

  /**
   * @param {string[]} ids
   * @returns {Promise<{users: User[]}>}
   */
  users(ids) {
    const list = ids.map(encodeURIComponent).join(',');
    return this.request('GET', `/v1/users?ids=${list}`);
  }

  /**
   * @param {string} channelId
   * @param {{limit?: number, before?: number}} [page]
   * @returns {Promise<HistoryPage>}
   */
  history(channelId, page = {}) {
    const params = new URLSearchParams();
    params.set('limit', String(page.limit ?? 50));
    if (page.before !== undefined) {
      params.set('before', String(page.before));
    }
    return this.request('GET', `/v1/channels/${encodeURIComponent(channelId)}/history?${params}`);
  }

  /**
   * @param {{name: string, private: boolean}} req
   * @returns {Promise<{channel: Channel}>}
   */
  createChannel(req) {
    return this.request('POST', '/v1/channels', req);
  }

  /** @returns {Promise<{channels: Channel[]}>} */
  listChannels() {
    return this.request('GET', '/v1/channels');
  }

  /**
   * @param {string} channelId
   * @returns {Promise<{channel: Channel}>}
   */
  join(channelId) {
    return this.request('POST', `/v1/channels/${encodeURIComponent(channelId)}/join`, {});
  }

  /**
   * @param {string} channelId
   * @returns {Promise<{ok: boolean}>}
   */
  leave(channelId) {
    return this.request('POST', `/v1/channels/${encodeURIComponent(channelId)}/leave`, {});
  }

  /**
   * @param {string} channelId
   * @param {string[]} userIds
   * @returns {Promise<{ok: boolean}>}
   */
  addMembers(channelId, userIds) {
    return this.request('POST', `/v1/channels/${encodeURIComponent(channelId)}/members`, {
      user_ids: userIds,
    });
  }

  /**
   * The DM (one other user, or none for notes to self) or group DM of exactly these users.
   * @param {string[]} userIds
   * @returns {Promise<{channel: Channel}>}
   */
  openDm(userIds) {
    return this.request('POST', '/v1/dms', { user_ids: userIds });
  }
}

// ---- RTM ----------------------------------------------------------------------------

/**
 * Events the server pushes (DESIGN.md §5; `core/proto/src/rtm.rs`).
 * @typedef {{type: 'hello'}
 *   | ({type: 'message'} & Message)
 *   | {type: 'message_changed', message: Message}
 *   | {type: 'message_deleted', channel: string, seq: number}
 *   | {type: 'user_typing', channel: string, user: string}
 *   | {type: 'presence_change', users: Array<{id: string, presence: Presence}>}
 *   | {type: 'channel_joined', channel: Channel}
 *   | {type: 'member_joined_channel', channel: string, user: string}
 *   | {type: 'member_left_channel', channel: string, user: string}
 *   | {type: 'channel_left', channel: string}
 *   | {type: 'channel_marked', channel: string, seq: number}
 *   | {type: 'user_change', user: User}
 *   | {type: 'goodbye', reason: string}} RtmEvent
 */

/**
 * Commands a client sends; the RtmClient adds the `id`.
 * @typedef {{type: 'message', channel: string, text: string, client_msg_id: string}
 *   | {type: 'resume', cursors: Record<string, number>}
 *   | {type: 'typing', channel: string}
 *   | {type: 'presence_sub', ids: string[]}
 *   | {type: 'presence_query', ids: string[]}
 *   | {type: 'presence_set', presence: 'auto' | 'away' | 'dnd'}
 *   | {type: 'mark', channel: string, seq: number}
 *   | {type: 'ping'}} RtmCommand
 */

/** @typedef {{reply_to: number, ok: boolean, [field: string]: unknown}} RtmReply */

/** @typedef {'connecting' | 'open' | 'reconnecting' | 'stopped'} ConnectionStatus */

/** Keep-alive interval; the server drops connections idle for 120 s. */
export const PING_EVERY_MS = 30_000;
/** How long a command may wait for its reply before it counts as failed. */
export const REPLY_TIMEOUT_MS = 10_000;
/** How long after the socket opens the `hello` must arrive. */
const HELLO_TIMEOUT_MS = 10_000;

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential from `baseMs`, capped
 * at `maxMs`, with "equal jitter" (half fixed, half random) so that many clients dropped
 * at once do not come back at once.
 * @param {number} attempt
 * @param {number} [random] a number in [0, 1)
 * @param {number} [baseMs]
 * @param {number} [maxMs]
 * @returns {number}
 */
export function backoffDelay(attempt, random = Math.random(), baseMs = 500, maxMs = 15_000) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(ceiling / 2 + (ceiling / 2) * random);
}

/**
 * The RTM WebSocket URL of the page's origin.
 * @param {Location | URL} location
 * @param {string} token
 * @returns {string}
 */
export function rtmUrl(location, token) {
  const scheme = location.protocol === 'http:' ? 'ws:' : 'wss:';
  return `${scheme}//${location.host}/v1/rtm?token=${encodeURIComponent(token)}`;
}

/**
 * One logical RTM session over as many WebSockets as it takes: it reconnects by itself
 * until stopped.
 */
export class RtmClient {
  /**
   * @param {object} options
   * @param {() => string} options.url called before each connection attempt
   * @param {(event: RtmEvent) => void} options.onEvent every pushed event but `hello`
   * @param {(status: ConnectionStatus, detail: {attempt: number, retryInMs?: number, reason?: string}) => void} options.onStatus
   * @param {() => void} [options.onOpen] after `hello`, before any queued command
   * @param {(attempt: number) => void} [options.onConnectFailed] a socket closed before `hello`
   * @param {typeof WebSocket} [options.WebSocketImpl]
   * @param {() => number} [options.random]
   */
  constructor(options) {
    this.options = options;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {ConnectionStatus} */
    this.status = 'stopped';
    this.nextId = 1;
    /** @type {Map<number, {resolve: (reply: RtmReply) => void, reject: (error: ApiError) => void, timer: ReturnType<typeof setTimeout>}>} */
    this.waiting = new Map();
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.pingTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.helloTimer = null;
    this.helloSeen = false;
  }

  /** Connects, and keeps reconnecting until {@link stop}. */
  start() {
    if (this.status !== 'stopped') {
      return;
    }
    this.setStatus('connecting', {});
    this.connect();
  }

  /** Closes for good (logout). */
  stop() {
    this.clearTimers();
    this.setStatus('stopped', {});
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      detach(ws);
      ws.close(1000, 'bye');
    }
    this.failWaiting('connection_lost', 'The connection was closed.');
  }

  /** Skips the backoff wait (e.g. the browser came back online). */
  reconnectNow() {
    if (this.status === 'reconnecting' && this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.connect();
    }
  }

  /**
   * Gives up on the current socket at once and reconnects with backoff, for when the
   * browser says the network is gone: a silently dead socket would otherwise take a
   * missed pong to notice.
   * @param {string} reason
   */
  interrupt(reason) {
    const ws = this.ws;
    if (!ws || this.status === 'stopped') {
      return;
    }
    detach(ws);
    ws.close();
    this.dropped(reason);
  }

  /** Whether commands can be sent now. */
  isOpen() {
    return this.status === 'open';
  }

  /**
   * Sends a command and resolves with its `ok` reply; rejects with an {@link ApiError}
   * on an error reply, a timeout, or when the connection drops first.
   * @param {RtmCommand} command
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<RtmReply>}
   */
  request(command, options = {}) {
    const ws = this.ws;
    if (!ws || this.status !== 'open') {
      return Promise.reject(new ApiError('not_connected', 'Not connected.'));
    }
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? REPLY_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new ApiError('timeout', 'The server did not answer in time.'));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      try {
        ws.send(JSON.stringify({ id, ...command }));
      } catch {
        clearTimeout(timer);
        this.waiting.delete(id);
        reject(new ApiError('connection_lost', 'The connection was lost.'));
      }
    });
  }

  /**
   * Like {@link request} for commands whose answer does not matter (typing, mark).
   * @param {RtmCommand} command
   */
  fire(command) {
    this.request(command).catch(() => {});
  }

  // ---- internals ----

  /**
   * @param {ConnectionStatus} status
   * @param {{retryInMs?: number, reason?: string}} detail
   */
  setStatus(status, detail) {
    this.status = status;
    this.options.onStatus(status, { attempt: this.attempt, ...detail });
  }

  connect() {
    this.retryTimer = null;
    this.helloSeen = false;
    const Impl = this.options.WebSocketImpl ?? WebSocket;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new Impl(this.options.url());
    } catch {
      this.dropped('cannot open a WebSocket');
      return;
    }
    this.ws = ws;
    ws.onmessage = (e) => this.onFrame(ws, e.data);
    ws.onclose = () => {
      if (this.ws === ws) {
        this.dropped('closed');
      }
    };
    ws.onerror = () => {
      // A `close` follows every `error`; reconnecting happens there.
    };
    this.helloTimer = setTimeout(() => {
      if (this.ws === ws && !this.helloSeen) {
        ws.close();
        this.dropped('no hello');
      }
    }, HELLO_TIMEOUT_MS);
  }

  /**
   * @param {WebSocket} ws
   * @param {unknown} data
   */
  onFrame(ws, data) {
    if (this.ws !== ws || typeof data !== 'string') {
      return;
    }
    /** @type {any} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object') {
      return;
    }
    if (typeof frame.reply_to === 'number') {
      const waiter = this.waiting.get(frame.reply_to);
      if (!waiter) {
        return;
      }
      this.waiting.delete(frame.reply_to);
      clearTimeout(waiter.timer);
      if (frame.ok) {
        waiter.resolve(frame);
      } else {
        const { code, msg } = errorOf(frame, 'The server refused the request.');
        waiter.reject(new ApiError(code, msg));
      }
      return;
    }
    switch (frame.type) {
      case 'hello':
        this.helloSeen = true;
        if (this.helloTimer !== null) {
          clearTimeout(this.helloTimer);
          this.helloTimer = null;
        }
        this.attempt = 0;
        this.startPings();
        this.setStatus('open', {});
        this.options.onOpen?.();
        return;
      case 'goodbye':
        this.options.onEvent(frame);
        // The server is going away: come back (elsewhere) after a short, jittered pause.
        this.attempt = 0;
        detach(ws);
        ws.close(1000, 'goodbye');
        this.dropped(`goodbye: ${frame.reason ?? ''}`);
        return;
      default:
        if (typeof frame.type === 'string') {
          this.options.onEvent(frame);
        }
    }
  }

  startPings() {
    if (this.pingTimer !== null) {
      clearInterval(this.pingTimer);
    }
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      this.request({ type: 'ping' }).catch((error) => {
        // No pong: the connection is dead even if the socket does not know it yet.
        if (error instanceof ApiError && error.code === 'timeout' && ws && this.ws === ws) {
          detach(ws);
          ws.close();
          this.dropped('ping timeout');
        }
      });
    }, PING_EVERY_MS);
  }

  clearTimers() {
    for (const t of [this.retryTimer, this.helloTimer]) {
      if (t !== null) clearTimeout(t);
    }
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.retryTimer = null;
    this.helloTimer = null;
    this.pingTimer = null;
  }

  /**
   * The current socket is gone: fail what waits on it and schedule the next attempt.
   * @param {string} reason
   */
  dropped(reason) {
    if (this.status === 'stopped') {
      return;
    }
    const hadHello = this.helloSeen;
    this.ws = null;
    this.clearTimers();
    this.failWaiting('connection_lost', 'The connection was lost.');
    if (!hadHello) {
      this.options.onConnectFailed?.(this.attempt);
    }
    const retryInMs = backoffDelay(this.attempt, (this.options.random ?? Math.random)());
    this.attempt += 1;
    this.setStatus('reconnecting', { retryInMs, reason });
    this.retryTimer = setTimeout(() => this.connect(), retryInMs);
  }

  /**
   * @param {string} code
   * @param {string} msg
   */
  failWaiting(code, msg) {
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.reject(new ApiError(code, msg));
    }
  }
}

/**
 * Stops a socket's handlers from reaching the client (it is being replaced).
 * @param {WebSocket} ws
 */
function detach(ws) {
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}
