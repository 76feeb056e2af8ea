// @ts-check
/**
 * @file The confab web client's UI: sign-in and workspace creation, then the chat —
 * sidebar, conversation, composer and dialogs. All rules about messages, cursors and
 * pending sends live in state.js; all talking to the server in api.js. This module wires
 * them to the DOM and decides when to fetch, send and redraw.
 */

import { ApiError, RestClient, RtmClient, rtmUrl, backoffDelay } from './api.js';
import * as S from './state.js';

/** @typedef {import('./state.js').Message} Message */
/** @typedef {import('./state.js').User} User */
/** @typedef {import('./state.js').Channel} Channel */
/** @typedef {import('./state.js').ChannelState} ChannelState */
/** @typedef {import('./state.js').PendingSend} PendingSend */
/** @typedef {import('./state.js').Received} Received */
/** @typedef {import('./api.js').RtmEvent} RtmEvent */
/** @typedef {import('./api.js').ConnectionStatus} ConnectionStatus */

/** @typedef {{token: string, userId: string, domain: string}} Session */

const SESSION_KEY = 'confab.session';
const FLASH_KEY = 'confab.flash';
const LAST_CHANNEL_KEY = 'confab.channel';
/** Closer to the bottom than this counts as "at the newest message". */
const NEAR_BOTTOM_PX = 48;
/** Closer to the top than this loads the previous page. */
const LOAD_OLDER_AT_PX = 150;
const MARK_DEBOUNCE_MS = 400;
const PRESENCE_DEBOUNCE_MS = 250;
/** Messages of one author within this window are drawn as one group. */
const GROUP_WINDOW_MS = 5 * 60 * 1000;
/** `limits::MAX_TEXT_BYTES`. */
const MAX_TEXT_BYTES = 40_000;
/** `limits::MAX_PRESENCE_IDS`. */
const MAX_PRESENCE_IDS = 500;
/** How long a send may wait for its ack before it shows Retry. */
const SEND_TIMEOUT_MS = 15_000;

// ---- DOM helpers --------------------------------------------------------------------

/**
 * @template {Element} T
 * @param {string} id
 * @param {{new (...args: any[]): T}} type
 * @returns {T}
 */
function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) {
    throw new Error(`#${id} is missing or is not a ${type.name}`);
  }
  return el;
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string | number | boolean | undefined>} [attrs] `class` and
 *   `text` are the class name and text content; `false`/`undefined` leave one out
 * @param {Array<Node | string | null | undefined | false>} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (name === 'class') el.className = String(value);
    else if (name === 'text') el.textContent = String(value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

/**
 * Puts `nodes` into `parent` in this order, touching only what is out of place, so a
 * live region announces additions and not a redraw.
 * @param {Element} parent
 * @param {Node[]} nodes
 */
function syncChildren(parent, nodes) {
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextSibling;
      continue;
    }
    parent.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    parent.removeChild(cursor);
    cursor = next;
  }
}

/**
 * Text with http(s) links made clickable; everything else stays text.
 * @param {HTMLElement} container
 * @param {string} text
 */
function renderText(container, text) {
  container.replaceChildren();
  const pattern = /\bhttps?:\/\/[^\s<>"']+/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    let url = match[0];
    // Trailing punctuation usually ends the sentence, not the link.
    const trimmed = url.replace(/[.,;:!?)\]]+$/, '');
    url = trimmed;
    const start = match.index ?? 0;
    if (start > last) container.append(text.slice(last, start));
    container.append(h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: url }));
    last = start + url.length;
  }
  if (last < text.length) container.append(text.slice(last));
}

/**
 * A stable hue for a user's avatar.
 * @param {string} id
 */
function hueOf(id) {
  let hash = 0;
  for (let i = 0; i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) >>> 0;
  return hash % 360;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });

/** @param {number} ms */
function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** @param {number} ms */
function dayLabel(ms) {
  const today = new Date();
  const key = dayKey(ms);
  if (key === dayKey(today.getTime())) return 'Today';
  if (key === dayKey(today.getTime() - 86_400_000)) return 'Yesterday';
  return dayFormat.format(ms);
}

/** @returns {string} */
function newClientMsgId() {
  if (typeof crypto.randomUUID === 'function') {
    return crypto.randomUUID();
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** @param {unknown} error */
function messageOf(error) {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A short-lived notice; errors are announced assertively.
 * @param {string} text
 * @param {'info' | 'error'} [kind]
 */
function toast(text, kind = 'error') {
  const box = byId('toasts', HTMLElement);
  const close = h('button', { type: 'button', 'aria-label': 'Dismiss', text: '×' });
  const item = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-testid': 'toast' }, [
    h('span', { text }),
    close,
  ]);
  close.addEventListener('click', () => item.remove());
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

// ---- session ------------------------------------------------------------------------

/** @returns {Session | null} */
function loadSession() {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw);
    if (parsed && typeof parsed.token === 'string' && parsed.token) {
      return { token: parsed.token, userId: String(parsed.userId ?? ''), domain: String(parsed.domain ?? '') };
    }
  } catch {
    // A broken entry is the same as none.
  }
  return null;
}

/** @param {Session} session */
function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

/**
 * Forgets the session and starts over at the sign-in screen.
 * @param {string} [flash] shown there
 */
function restart(flash) {
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(LAST_CHANNEL_KEY);
  if (flash) sessionStorage.setItem(FLASH_KEY, flash);
  history.replaceState(null, '', location.pathname);
  location.reload();
}

// ---- sign in / create a workspace ---------------------------------------------------

function showAuth() {
  const auth = byId('auth', HTMLElement);
  byId('app', HTMLElement).hidden = true;
  auth.hidden = false;
  const form = byId('auth-form', HTMLFormElement);
  const toggle = byId('create-team-toggle', HTMLButtonElement);
  const title = byId('auth-title', HTMLElement);
  const switchText = byId('auth-switch-text', HTMLElement);
  const submit = byId('login-submit', HTMLButtonElement);
  const error = byId('auth-error', HTMLElement);
  const teamName = byId('create-team-name', HTMLInputElement);
  const domain = byId('login-team', HTMLInputElement);
  const name = byId('create-name', HTMLInputElement);
  const email = byId('login-email', HTMLInputElement);
  const password = byId('login-password', HTMLInputElement);
  let creating = false;
  let domainEdited = false;

  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  /** @param {string} text */
  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  showError(flash ?? '');

  /** @param {boolean} create */
  const setMode = (create) => {
    creating = create;
    auth.classList.toggle('creating', create);
    toggle.setAttribute('aria-pressed', String(create));
    title.textContent = create ? 'Create a workspace' : 'Sign in to your workspace';
    switchText.textContent = create ? 'Already have a workspace?' : 'New to confab?';
    toggle.textContent = create ? 'Sign in instead' : 'Create a workspace';
    submit.textContent = create ? 'Create workspace' : 'Sign in';
    teamName.required = create;
    name.required = create;
    password.autocomplete = create ? 'new-password' : 'current-password';
    password.minLength = create ? 8 : 0;
    showError('');
    (create ? teamName : domain).focus();
  };
  toggle.addEventListener('click', () => setMode(!creating));
  domain.addEventListener('input', () => {
    domainEdited = domain.value !== '';
  });
  teamName.addEventListener('input', () => {
    if (!domainEdited) {
      domain.value = teamName.value
        .toLowerCase()
        .normalize('NFKD')
        .replace(/[^a-z0-9]+/g, '-')
        .replace(/^-+|-+$/g, '')
        .slice(0, 63);
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError('');
    submit.disabled = true;
    const rest = new RestClient();
    try {
      const team = domain.value.trim().toLowerCase();
      /** @type {{token: string, user: User}} */
      let answer;
      if (creating) {
        answer = await rest.createTeam({
          name: teamName.value.trim() || team,
          domain: team,
          owner: { email: email.value.trim(), name: name.value.trim(), password: password.value },
        });
      } else {
        answer = await rest.login({ team, email: email.value.trim(), password: password.value });
      }
      saveSession({ token: answer.token, userId: answer.user.id, domain: team });
      password.value = '';
      auth.hidden = true;
      startChat(/** @type {Session} */ (loadSession()));
    } catch (e) {
      showError(messageOf(e));
    } finally {
      submit.disabled = false;
    }
  });
  setMode(false);
  if (!domain.value) domain.focus();
}

// ---- the chat -----------------------------------------------------------------------

/** @param {Session} session */
function startChat(session) {
  const app = new ChatApp(session);
  // Reachable from the console for debugging; nothing depends on it.
  /** @type {any} */ (window).confab = app;
  void app.start();
}

/**
 * One signed-in session in one tab.
 */
class ChatApp {
  /** @param {Session} session */
  constructor(session) {
    this.session = session;
    this.state = S.createState();
    this.rest = new RestClient({
      token: session.token,
      onUnauthorized: () => this.signOut('Your session has ended. Please sign in again.'),
    });
    this.rtm = new RtmClient({
      url: () => rtmUrl(location, session.token),
      onEvent: (event) => this.onEvent(event),
      onStatus: (status, detail) => this.onStatus(status, detail),
      onOpen: () => void this.onConnected(),
      onConnectFailed: (attempt) => this.onConnectFailed(attempt),
    });
    /** @type {string | null} the open conversation */
    this.current = null;
    /** @type {ConnectionStatus} */
    this.connection = 'connecting';
    this.everConnected = false;
    /** Bumped on each new connection, so the work of an older one can tell it is stale. */
    this.connGen = 0;
    this.resuming = false;
    this.drawPending = false;
    this.stickToBottom = true;
    /** @type {number | null} */
    this.lastTypingSent = null;
    /** @type {Map<string, string>} unsent text per conversation */
    this.drafts = new Map();
    /** @type {Map<string, {el: HTMLElement, sig: string}>} message list nodes by key */
    this.nodes = new Map();
    /** @type {Map<string, HTMLLIElement>} sidebar items by channel id */
    this.navNodes = new Map();
    /** @type {string | null} */
    this.renderedChannel = null;
    /** @type {string | null} */
    this.renderedFirstKey = null;
    this.presenceSubKey = '';
    /** @type {Set<string>} */
    this.loadingLatest = new Set();
    /** @type {Set<string>} */
    this.loadingOlder = new Set();
    /** @type {Map<string, string>} channel id → why its history failed */
    this.historyErrors = new Map();
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.gapTimers = new Map();
    /** @type {Set<string>} */
    this.userQueue = new Set();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.userTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.markTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.presenceTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.typingTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.reconcileTimer = null;
    this.bootFailed = false;

    this.el = {
      app: byId('app', HTMLElement),
      sidebar: byId('sidebar', HTMLElement),
      scrim: byId('scrim', HTMLElement),
      teamName: byId('team-name', HTMLElement),
      me: byId('me', HTMLElement),
      channelsUl: byId('channels-ul', HTMLUListElement),
      dmsUl: byId('dms-ul', HTMLUListElement),
      title: byId('channel-title', HTMLElement),
      meta: byId('channel-meta', HTMLElement),
      addMembers: byId('add-members', HTMLButtonElement),
      leave: byId('leave-channel', HTMLButtonElement),
      menu: byId('sidebar-toggle', HTMLButtonElement),
      menuBadge: byId('menu-badge', HTMLElement),
      banner: byId('connection-banner', HTMLElement),
      bannerText: byId('connection-text', HTMLElement),
      reconnectNow: byId('reconnect-now', HTMLButtonElement),
      empty: byId('empty-state', HTMLElement),
      wrap: byId('messages-wrap', HTMLElement),
      messages: byId('messages', HTMLElement),
      log: byId('message-log', HTMLElement),
      list: byId('message-list', HTMLOListElement),
      loadOlder: byId('load-older', HTMLButtonElement),
      historyStatus: byId('history-status', HTMLElement),
      jump: byId('jump-latest', HTMLButtonElement),
      typing: byId('typing-indicator', HTMLElement),
      form: byId('composer-form', HTMLFormElement),
      composer: byId('composer', HTMLTextAreaElement),
      composerLabel: byId('composer-label', HTMLElement),
      composerHint: byId('composer-hint', HTMLElement),
    };
  }

  // ---- start-up ----

  async start() {
    this.el.app.hidden = false;
    byId('auth', HTMLElement).hidden = true;
    this.bindUi();
    this.draw();
    for (let attempt = 0; ; attempt++) {
      try {
        const boot = await this.rest.boot();
        S.applyBoot(this.state, boot);
        this.bootFailed = false;
        break;
      } catch (e) {
        if (e instanceof ApiError && e.code === 'not_authed') {
          return; // onUnauthorized signs out
        }
        this.bootFailed = true;
        this.drawBanner();
        await sleep(backoffDelay(attempt));
      }
    }
    const wanted = this.channelFromHash() ?? sessionStorage.getItem(LAST_CHANNEL_KEY);
    const first = wanted && this.state.channels.has(wanted) ? wanted : this.navOrder()[0];
    if (first) {
      this.openChannel(first, { focus: true });
    }
    this.draw();
    this.rtm.start();
  }

  /** @returns {string | null} */
  channelFromHash() {
    const match = /^#\/c\/(.+)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  /**
   * @param {string} message
   */
  signOut(message) {
    this.rtm.stop();
    restart(message);
  }

  bindUi() {
    const el = this.el;
    document.querySelector('.skip-link')?.addEventListener('click', (e) => {
      // The URL's hash names the open conversation; the skip link must not replace it.
      e.preventDefault();
      el.composer.focus();
    });
    byId('logout', HTMLButtonElement).addEventListener('click', () => {
      this.rtm.stop();
      restart();
    });
    window.addEventListener('hashchange', () => {
      const id = this.channelFromHash();
      if (id && this.state.channels.has(id)) this.openChannel(id, { focus: true });
    });
    el.menu.addEventListener('click', () => this.setSidebarOpen(!el.app.classList.contains('sidebar-open')));
    el.scrim.addEventListener('click', () => this.setSidebarOpen(false));
    el.reconnectNow.addEventListener('click', () => this.rtm.reconnectNow());
    window.addEventListener('online', () => this.rtm.reconnectNow());
    window.addEventListener('offline', () => this.rtm.interrupt('browser offline'));
    document.addEventListener('visibilitychange', () => this.scheduleMark());
    window.addEventListener('focus', () => this.scheduleMark());
    window.addEventListener('resize', () => this.schedulePresenceSub());
    document.addEventListener('keydown', (e) => this.onGlobalKey(e));

    el.messages.addEventListener('scroll', () => this.onScroll(), { passive: true });
    el.loadOlder.addEventListener('click', () => void this.loadOlder());
    el.jump.addEventListener('click', () => {
      el.messages.scrollTop = el.messages.scrollHeight;
      this.stickToBottom = true;
      el.jump.hidden = true;
      el.composer.focus();
    });
    el.list.addEventListener('click', (e) => this.onListClick(e));

    el.composer.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && !e.isComposing) {
        e.preventDefault();
        this.submitComposer();
      }
    });
    el.composer.addEventListener('input', () => this.onComposerInput());
    el.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitComposer();
    });

    el.addMembers.addEventListener('click', () => this.openPeopleDialog('members'));
    el.leave.addEventListener('click', () => void this.leaveCurrent());
    byId('new-channel', HTMLButtonElement).addEventListener('click', () => this.openNewChannelDialog());
    byId('browse-channels', HTMLButtonElement).addEventListener('click', () => void this.openBrowseDialog());
    byId('new-dm', HTMLButtonElement).addEventListener('click', () => this.openPeopleDialog('dm'));
    byId('empty-new-channel', HTMLButtonElement).addEventListener('click', () => this.openNewChannelDialog());
    byId('empty-browse', HTMLButtonElement).addEventListener('click', () => void this.openBrowseDialog());
    byId('empty-new-dm', HTMLButtonElement).addEventListener('click', () => this.openPeopleDialog('dm'));
    for (const button of document.querySelectorAll('dialog [data-close]')) {
      button.addEventListener('click', () => button.closest('dialog')?.close());
    }
    byId('new-channel-form', HTMLFormElement).addEventListener('submit', (e) => {
      e.preventDefault();
      void this.createChannel();
    });
    byId('people-form', HTMLFormElement).addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submitPeople();
    });
    byId('people-filter', HTMLInputElement).addEventListener('input', () => this.drawPeopleList());
    byId('browse-filter', HTMLInputElement).addEventListener('input', () => this.drawBrowseList());
  }

  /** @param {KeyboardEvent} e */
  onGlobalKey(e) {
    if (e.key === 'Escape' && this.el.app.classList.contains('sidebar-open')) {
      this.setSidebarOpen(false);
      this.el.menu.focus();
      return;
    }
    // Alt+↑ / Alt+↓: previous / next conversation.
    if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      const order = this.navOrder();
      if (order.length === 0) return;
      e.preventDefault();
      const at = this.current ? order.indexOf(this.current) : -1;
      const next = e.key === 'ArrowUp' ? Math.max(0, at - 1) : Math.min(order.length - 1, at + 1);
      this.navigate(order[next]);
    }
  }

  /** @param {boolean} open */
  setSidebarOpen(open) {
    this.el.app.classList.toggle('sidebar-open', open);
    this.el.scrim.hidden = !open;
    this.el.menu.setAttribute('aria-expanded', String(open));
    this.el.menu.setAttribute('aria-label', open ? 'Hide conversations' : 'Show conversations');
    if (open) {
      const link = this.el.sidebar.querySelector('a[aria-current="page"]') ?? this.el.sidebar.querySelector('a');
      if (link instanceof HTMLElement) link.focus();
    }
  }

  // ---- connection ----

  /**
   * @param {ConnectionStatus} status
   * @param {{attempt: number, retryInMs?: number}} _detail
   */
  onStatus(status, _detail) {
    this.connection = status;
    if (status !== 'open') {
      this.connGen++;
      this.presenceSubKey = '';
      // Without a connection nobody's presence is known any more; it is asked for again
      // on the next one.
      this.state.presence.clear();
    }
    this.drawBanner();
    this.draw();
  }

  /**
   * A socket closed before `hello`: if that keeps happening, check that the token is
   * still good (a WebSocket cannot see the 401 of a refused upgrade).
   * @param {number} attempt
   */
  onConnectFailed(attempt) {
    if (attempt >= 2 && this.state.self) {
      this.rest.users([this.state.self.id]).catch(() => {});
    }
  }

  /**
   * After `hello`: catch up (a fresh boot after a reconnect, then `resume` with a cursor
   * per channel), send what waited for the connection, and subscribe to presence again.
   */
  async onConnected() {
    const gen = ++this.connGen;
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.resuming = true;
    this.presenceSubKey = '';
    if (reconnect) {
      try {
        const prune = [...this.state.channels.keys()];
        const boot = await this.rest.boot();
        if (gen !== this.connGen) return;
        const dropped = S.applyBoot(this.state, boot, { prune });
        this.afterChannelsDropped(dropped);
      } catch {
        // Resume with what is held; the next reconnect reconciles again.
      }
      if (gen !== this.connGen) return;
    }
    const resumed = this.rtm.request({ type: 'resume', cursors: S.resumeCursors(this.state) }, { timeoutMs: 60_000 });
    this.flushQueued();
    this.schedulePresenceSub(0);
    try {
      const reply = await resumed;
      if (gen !== this.connGen) return;
      const failed = reply.failed;
      if (failed && typeof failed === 'object') {
        const gone = Object.keys(failed).filter((id) => {
          const code = /** @type {Record<string, {code?: string}>} */ (failed)[id]?.code;
          return code === 'not_in_channel' || code === 'channel_not_found';
        });
        for (const id of gone) S.removeChannel(this.state, id);
        this.afterChannelsDropped(gone);
      }
    } catch (e) {
      if (gen !== this.connGen) return;
      if (!(e instanceof ApiError && (e.code === 'connection_lost' || e.code === 'not_connected'))) {
        toast(`Could not catch up: ${messageOf(e)}`);
      }
    } finally {
      if (gen === this.connGen) this.resuming = false;
    }
    if (gen !== this.connGen) return;
    for (const ch of this.state.channels.values()) {
      if (S.hasGap(ch)) this.scheduleGapFill(ch.id, 0);
    }
    if (this.current && !this.state.channels.get(this.current)?.historyLoaded) {
      void this.loadLatest(this.current);
    }
    this.scheduleMark();
    this.draw();
  }

  /** @param {string[]} dropped */
  afterChannelsDropped(dropped) {
    if (this.current && dropped.includes(this.current)) {
      const next = this.navOrder()[0];
      this.current = null;
      if (next) this.navigate(next);
    }
  }

  /**
   * @param {RtmEvent} event
   */
  onEvent(event) {
    const state = this.state;
    switch (event.type) {
      case 'message': {
        const { type: _type, ...message } = event;
        this.afterReceive(message, S.receiveMessage(state, message));
        break;
      }
      case 'message_changed':
        if (S.changeMessage(state, event.message)) this.draw();
        break;
      case 'message_deleted':
        if (S.deleteMessage(state, event.channel, event.seq)) this.draw();
        break;
      case 'user_typing':
        if (event.user !== state.self?.id) {
          S.typingStarted(state, event.channel, event.user, Date.now());
          this.ensureUsers([event.user]);
          this.startTypingTimer();
          this.drawTyping();
        }
        break;
      case 'presence_change':
        S.applyPresence(state, event.users);
        this.draw();
        break;
      case 'channel_joined': {
        S.addChannel(state, event.channel);
        this.ensureUsers(event.channel.members ?? []);
        void this.loadLatest(event.channel.id);
        if (!this.current) this.navigate(event.channel.id);
        this.schedulePresenceSub();
        this.draw();
        break;
      }
      case 'member_joined_channel':
      case 'member_left_channel':
        this.ensureUsers([event.user]);
        break;
      case 'channel_left':
        S.removeChannel(state, event.channel);
        this.afterChannelsDropped([event.channel]);
        this.draw();
        break;
      case 'channel_marked':
        S.markRead(state, event.channel, event.seq);
        this.draw();
        break;
      case 'user_change':
        S.upsertUsers(state, [event.user]);
        this.draw();
        break;
      case 'goodbye':
      case 'hello':
        break; // the RtmClient reconnects by itself
    }
  }

  /**
   * @param {Message} message
   * @param {Received} received
   */
  afterReceive(message, received) {
    if (received.unknownChannel) {
      this.scheduleReconcile();
    }
    if (received.isNew) {
      this.ensureUsers([message.user]);
      if (message.channel === this.current) {
        this.schedulePresenceSub();
        if (this.stickToBottom) this.scheduleMark();
        else if (message.user !== this.state.self?.id) this.el.jump.hidden = false;
      }
      this.drawTyping();
    }
    if (received.gap) {
      this.scheduleGapFill(message.channel);
    }
    this.draw();
  }

  /** A message came from a channel this tab did not know: ask boot what it is. */
  scheduleReconcile() {
    if (this.reconcileTimer !== null) return;
    this.reconcileTimer = setTimeout(async () => {
      this.reconcileTimer = null;
      try {
        S.applyBoot(this.state, await this.rest.boot());
        this.draw();
      } catch {
        // The next reconnect tries again.
      }
    }, 500);
  }

  // ---- history ----

  /** @param {string} channelId */
  async loadLatest(channelId) {
    if (this.loadingLatest.has(channelId)) return;
    this.loadingLatest.add(channelId);
    this.historyErrors.delete(channelId);
    this.draw();
    try {
      const page = await this.rest.history(channelId, { limit: S.PAGE_SIZE });
      const result = S.applyHistory(this.state, channelId, page, 'latest');
      this.ensureUsers(page.messages.map((m) => m.user));
      if (result.gap) this.scheduleGapFill(channelId);
    } catch (e) {
      this.historyErrors.set(channelId, messageOf(e));
    } finally {
      this.loadingLatest.delete(channelId);
      this.draw();
    }
  }

  async loadOlder() {
    const channelId = this.current;
    if (!channelId || this.loadingOlder.has(channelId)) return;
    const request = S.olderRequest(this.state, channelId);
    if (!request) return;
    this.loadingOlder.add(channelId);
    this.historyErrors.delete(channelId);
    this.draw();
    try {
      const page = await this.rest.history(channelId, request);
      S.applyHistory(this.state, channelId, page, 'older');
      this.ensureUsers(page.messages.map((m) => m.user));
    } catch (e) {
      this.historyErrors.set(channelId, messageOf(e));
    } finally {
      this.loadingOlder.delete(channelId);
      this.draw();
    }
  }

  /**
   * Fetches the missing seqs of a channel a little later, so that a resume replay in
   * progress can fill them first.
   * @param {string} channelId
   * @param {number} [delay]
   */
  scheduleGapFill(channelId, delay = 800) {
    if (this.gapTimers.has(channelId)) return;
    this.gapTimers.set(
      channelId,
      setTimeout(() => {
        this.gapTimers.delete(channelId);
        if (this.resuming) {
          this.scheduleGapFill(channelId);
          return;
        }
        this.fillGaps(channelId);
      }, delay),
    );
  }

  /** @param {string} channelId */
  fillGaps(channelId) {
    for (const request of S.takeGapRequests(this.state, channelId)) {
      this.rest
        .history(channelId, { before: request.before, limit: request.limit })
        .then((page) => {
          S.applyGapPage(this.state, request, page.messages);
          this.ensureUsers(page.messages.map((m) => m.user));
        })
        .catch(() => {
          S.gapFailed(this.state, request);
        })
        .finally(() => {
          const ch = this.state.channels.get(channelId);
          if (ch && S.hasGap(ch)) this.scheduleGapFill(channelId, 3000);
          this.draw();
        });
    }
  }

  // ---- users and presence ----

  /** @param {Iterable<string>} ids */
  ensureUsers(ids) {
    for (const id of S.takeMissingUsers(this.state, ids)) this.userQueue.add(id);
    if (this.userQueue.size === 0 || this.userTimer !== null) return;
    this.userTimer = setTimeout(() => {
      this.userTimer = null;
      const ids = [...this.userQueue];
      this.userQueue.clear();
      for (let i = 0; i < ids.length; i += 100) {
        const chunk = ids.slice(i, i + 100);
        this.rest
          .users(chunk)
          .then((answer) => {
            S.upsertUsers(this.state, answer.users);
            this.schedulePresenceSub();
            this.draw();
          })
          .catch(() => S.usersFailed(this.state, chunk));
      }
    }, 25);
  }

  /** @param {string} id */
  userName(id) {
    return this.state.users.get(id)?.name ?? id;
  }

  /** @param {number} [delay] */
  schedulePresenceSub(delay = PRESENCE_DEBOUNCE_MS) {
    if (this.presenceTimer !== null) clearTimeout(this.presenceTimer);
    this.presenceTimer = setTimeout(() => {
      this.presenceTimer = null;
      this.syncPresenceSub();
    }, delay);
  }

  /**
   * Subscribes to exactly the users whose presence is on screen: the authors of the
   * visible messages, the partners of 1:1 DMs in the sidebar, and oneself. Newly shown
   * users are also queried, since a subscription only reports changes.
   */
  syncPresenceSub() {
    if (!this.rtm.isOpen()) return;
    /** @type {Set<string>} */
    const ids = new Set();
    if (this.state.self) ids.add(this.state.self.id);
    for (const ch of this.state.channels.values()) {
      const partner = this.dmPartner(ch);
      if (partner) ids.add(partner);
    }
    const box = this.el.messages.getBoundingClientRect();
    for (const node of this.el.list.children) {
      if (!(node instanceof HTMLElement) || !node.dataset.userId) continue;
      const r = node.getBoundingClientRect();
      if (r.bottom >= box.top && r.top <= box.bottom) ids.add(node.dataset.userId);
    }
    const list = [...ids].sort().slice(0, MAX_PRESENCE_IDS);
    const key = list.join(',');
    if (key === this.presenceSubKey) return;
    const before = new Set(this.presenceSubKey ? this.presenceSubKey.split(',') : []);
    this.presenceSubKey = key;
    this.rtm.fire({ type: 'presence_sub', ids: list });
    const fresh = list.filter((id) => !before.has(id));
    if (fresh.length === 0) return;
    this.rtm
      .request({ type: 'presence_query', ids: fresh })
      .then((reply) => {
        if (Array.isArray(reply.users)) {
          S.applyPresence(this.state, reply.users);
          this.draw();
        }
      })
      .catch(() => {
        // Changes still arrive through the subscription.
      });
  }

  /**
   * The other member of a 1:1 DM (oneself for notes to self), or null.
   * @param {ChannelState} ch
   * @returns {string | null}
   */
  dmPartner(ch) {
    if (ch.kind !== 'dm') return null;
    const members = ch.members ?? [];
    const self = this.state.self?.id;
    return members.find((id) => id !== self) ?? self ?? null;
  }

  /**
   * @param {string} userId
   * @returns {HTMLSpanElement}
   */
  presenceDot(userId) {
    const dot = h('span', { class: 'presence', 'data-testid': 'presence-dot', 'data-user-id': userId, role: 'img' });
    this.updateDot(dot);
    return dot;
  }

  /** @param {HTMLElement} dot */
  updateDot(dot) {
    const id = dot.dataset.userId ?? '';
    const presence = this.state.presence.get(id) ?? 'unknown';
    if (dot.dataset.presence !== presence) {
      dot.dataset.presence = presence;
      const label = { active: 'Active', away: 'Away', dnd: 'Do not disturb', unknown: 'Presence unknown' }[presence];
      dot.setAttribute('aria-label', label);
      dot.title = label;
    }
  }

  // ---- marking read ----

  scheduleMark() {
    if (this.markTimer !== null) clearTimeout(this.markTimer);
    this.markTimer = setTimeout(() => {
      this.markTimer = null;
      const id = this.current;
      if (!id || document.visibilityState !== 'visible' || !this.stickToBottom || !this.rtm.isOpen()) return;
      const seq = S.markTarget(this.state, id);
      if (seq === null) return;
      S.markRead(this.state, id, seq);
      this.rtm.fire({ type: 'mark', channel: id, seq });
      this.draw();
    }, MARK_DEBOUNCE_MS);
  }

  // ---- conversations ----

  /** Conversation ids in sidebar order. */
  navOrder() {
    const { channels, dms } = this.sidebarGroups();
    return [...channels, ...dms].map((c) => c.id);
  }

  sidebarGroups() {
    const all = [...this.state.channels.values()].filter((c) => !c.placeholder);
    const channels = all
      .filter((c) => c.kind === 'public' || c.kind === 'private')
      .sort((a, b) => a.name.localeCompare(b.name));
    const dms = all
      .filter((c) => c.kind === 'dm' || c.kind === 'group_dm')
      .map((c) => ({ c, title: S.channelTitle(this.state, c) }))
      .sort((a, b) => a.title.localeCompare(b.title))
      .map((x) => x.c);
    return { channels, dms };
  }

  /**
   * Opens a conversation through the URL, so back and forward work.
   * @param {string} channelId
   */
  navigate(channelId) {
    const hash = `#/c/${encodeURIComponent(channelId)}`;
    if (location.hash !== hash) {
      location.hash = hash;
    }
    this.openChannel(channelId, { focus: true });
  }

  /**
   * @param {string} channelId
   * @param {{focus?: boolean}} [options]
   */
  openChannel(channelId, options = {}) {
    const ch = this.state.channels.get(channelId);
    if (!ch) return;
    if (this.current !== channelId) {
      if (this.current) this.drafts.set(this.current, this.el.composer.value);
      this.current = channelId;
      sessionStorage.setItem(LAST_CHANNEL_KEY, channelId);
      this.el.composer.value = this.drafts.get(channelId) ?? '';
      this.autoGrow();
      this.lastTypingSent = null;
      this.stickToBottom = true;
      this.el.jump.hidden = true;
      const hash = `#/c/${encodeURIComponent(channelId)}`;
      if (location.hash !== hash) history.replaceState(null, '', hash);
    }
    this.setSidebarOpen(false);
    if (!ch.historyLoaded) void this.loadLatest(channelId);
    this.draw();
    this.drawNow();
    this.schedulePresenceSub();
    this.scheduleMark();
    if (options.focus && !window.matchMedia('(max-width: 760px)').matches) this.el.composer.focus();
  }

  // ---- sending ----

  onComposerInput() {
    this.autoGrow();
    const id = this.current;
    if (!id || !this.el.composer.value.trim() || !this.rtm.isOpen()) return;
    const now = Date.now();
    if (S.shouldSendTyping(this.lastTypingSent, now)) {
      this.lastTypingSent = now;
      this.rtm.fire({ type: 'typing', channel: id });
    }
  }

  autoGrow() {
    const c = this.el.composer;
    c.style.height = 'auto';
    c.style.height = `${Math.min(c.scrollHeight, Math.round(window.innerHeight * 0.4))}px`;
  }

  submitComposer() {
    const id = this.current;
    const text = this.el.composer.value;
    if (!id || !text.trim()) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      toast(`Messages are limited to ${MAX_TEXT_BYTES} bytes.`);
      return;
    }
    const clientMsgId = newClientMsgId();
    S.addPending(this.state, { channel: id, text, client_msg_id: clientMsgId, now: Date.now() });
    this.el.composer.value = '';
    this.drafts.delete(id);
    this.autoGrow();
    this.lastTypingSent = null;
    this.stickToBottom = true;
    this.dispatchSend(clientMsgId);
    this.draw();
  }

  /**
   * Sends (or re-sends, with the same client_msg_id) a pending message over RTM.
   * @param {string} clientMsgId
   */
  dispatchSend(clientMsgId) {
    if (!this.rtm.isOpen()) {
      S.queueSend(this.state, clientMsgId);
      this.draw();
      return;
    }
    const command = S.startSend(this.state, clientMsgId);
    if (!command) return;
    this.draw();
    this.rtm
      .request(command, { timeoutMs: SEND_TIMEOUT_MS })
      .then((reply) => {
        const message = /** @type {Message | undefined} */ (reply.message);
        if (message && typeof message.seq === 'number') {
          this.afterReceive(message, S.ackSend(this.state, clientMsgId, message));
        }
      })
      .catch((e) => {
        if (!this.state.pending.has(clientMsgId)) return; // the event got here first
        if (e instanceof ApiError && (e.code === 'connection_lost' || e.code === 'not_connected')) {
          // It goes out again (same id) once connected; the server drops a repeat.
          S.queueSend(this.state, clientMsgId);
        } else if (e instanceof ApiError && e.code === 'timeout') {
          S.failSend(this.state, clientMsgId, 'Not sent: the server did not answer.');
        } else {
          S.failSend(this.state, clientMsgId, `Not sent: ${messageOf(e)}`);
        }
        this.draw();
      });
  }

  flushQueued() {
    for (const p of S.queuedSends(this.state)) this.dispatchSend(p.client_msg_id);
  }

  /** @param {MouseEvent} e */
  onListClick(e) {
    const target = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
    if (!(target instanceof HTMLButtonElement)) return;
    const item = target.closest('[data-client-msg-id]');
    const id = item instanceof HTMLElement ? item.dataset.clientMsgId : undefined;
    if (!id) return;
    if (target.dataset.action === 'retry') {
      this.dispatchSend(id);
    } else if (target.dataset.action === 'discard') {
      S.discardSend(this.state, id);
      this.draw();
      this.el.composer.focus();
    }
  }

  // ---- scrolling ----

  onScroll() {
    const box = this.el.messages;
    this.stickToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
    if (this.stickToBottom) {
      this.el.jump.hidden = true;
      this.scheduleMark();
    }
    if (box.scrollTop < LOAD_OLDER_AT_PX) void this.loadOlder();
    this.schedulePresenceSub();
  }

  // ---- dialogs ----

  openNewChannelDialog() {
    const dialog = byId('dialog-new-channel', HTMLDialogElement);
    const form = byId('new-channel-form', HTMLFormElement);
    form.reset();
    this.dialogError(dialog, '');
    dialog.showModal();
    byId('new-channel-name', HTMLInputElement).focus();
  }

  async createChannel() {
    const dialog = byId('dialog-new-channel', HTMLDialogElement);
    const submit = byId('new-channel-submit', HTMLButtonElement);
    submit.disabled = true;
    try {
      const { channel } = await this.rest.createChannel({
        name: byId('new-channel-name', HTMLInputElement).value.trim(),
        private: byId('new-channel-private', HTMLInputElement).checked,
      });
      this.joined(channel);
      dialog.close();
    } catch (e) {
      this.dialogError(dialog, messageOf(e));
    } finally {
      submit.disabled = false;
    }
  }

  /**
   * The user is now in `channel` (they created, joined or opened it): show it.
   * @param {Channel} channel
   */
  joined(channel) {
    S.addChannel(this.state, channel);
    this.ensureUsers(channel.members ?? []);
    this.navigate(channel.id);
  }

  /**
   * @param {HTMLDialogElement} dialog
   * @param {string} text
   */
  dialogError(dialog, text) {
    const p = dialog.querySelector('.form-error');
    if (p instanceof HTMLElement) {
      p.textContent = text;
      p.hidden = !text;
    }
  }

  /** @type {Channel[]} */
  browseChannels = [];

  async openBrowseDialog() {
    const dialog = byId('dialog-browse', HTMLDialogElement);
    byId('browse-filter', HTMLInputElement).value = '';
    this.dialogError(dialog, '');
    this.browseChannels = [];
    const list = byId('browse-list', HTMLUListElement);
    list.replaceChildren(h('li', { text: 'Loading…' }));
    if (!dialog.open) dialog.showModal();
    byId('browse-filter', HTMLInputElement).focus();
    try {
      this.browseChannels = (await this.rest.listChannels()).channels;
      this.drawBrowseList();
    } catch (e) {
      list.replaceChildren();
      this.dialogError(dialog, messageOf(e));
    }
  }

  drawBrowseList() {
    const list = byId('browse-list', HTMLUListElement);
    const filter = byId('browse-filter', HTMLInputElement).value.trim().toLowerCase().replace(/^#/, '');
    const rows = this.browseChannels
      .filter((c) => !filter || c.name.includes(filter))
      .map((c) => {
        const member = this.state.channels.has(c.id);
        const button = h('button', {
          type: 'button',
          class: member ? 'ghost' : 'primary',
          'data-testid': member ? 'open-channel' : 'join-channel',
          'data-channel-id': c.id,
          text: member ? 'Open' : 'Join',
          'aria-label': `${member ? 'Open' : 'Join'} ${c.name}`,
        });
        button.addEventListener('click', () => void this.joinFromBrowse(c, member, button));
        return h('li', { 'data-channel-id': c.id }, [
          h('span', { class: 'grow' }, [
            h('strong', { text: `${c.kind === 'private' ? '🔒 ' : '#'}${c.name}` }),
            h('div', { class: 'sub', text: c.kind === 'private' ? 'Private channel' : 'Public channel' }),
          ]),
          button,
        ]);
      });
    list.replaceChildren(...rows);
  }

  /**
   * @param {Channel} channel
   * @param {boolean} member
   * @param {HTMLButtonElement} button
   */
  async joinFromBrowse(channel, member, button) {
    const dialog = byId('dialog-browse', HTMLDialogElement);
    if (member) {
      dialog.close();
      this.navigate(channel.id);
      return;
    }
    button.disabled = true;
    try {
      const answer = await this.rest.join(channel.id);
      this.joined(answer.channel ?? channel);
      dialog.close();
    } catch (e) {
      this.dialogError(dialog, messageOf(e));
    } finally {
      button.disabled = false;
    }
  }

  /** @type {'dm' | 'members'} */
  peopleMode = 'dm';

  /** @param {'dm' | 'members'} mode */
  openPeopleDialog(mode) {
    this.peopleMode = mode;
    const dialog = byId('dialog-people', HTMLDialogElement);
    const ch = this.current ? this.state.channels.get(this.current) : undefined;
    byId('people-heading', HTMLElement).textContent =
      mode === 'dm' ? 'New direct message' : `Add people to ${ch ? S.channelTitle(this.state, ch) : 'the channel'}`;
    byId('people-submit', HTMLButtonElement).textContent = mode === 'dm' ? 'Start conversation' : 'Add';
    byId('people-filter', HTMLInputElement).value = '';
    byId('people-ids', HTMLInputElement).value = '';
    this.dialogError(dialog, '');
    this.drawPeopleList();
    dialog.showModal();
    byId('people-filter', HTMLInputElement).focus();
  }

  drawPeopleList() {
    const list = byId('people-list', HTMLUListElement);
    const checked = new Set(
      [...list.querySelectorAll('input:checked')].map((i) => (i instanceof HTMLInputElement ? i.value : '')),
    );
    const filter = byId('people-filter', HTMLInputElement).value.trim().toLowerCase();
    const self = this.state.self?.id;
    const users = [...this.state.users.values()]
      .filter((u) => u.id !== self)
      .filter((u) => !filter || u.name.toLowerCase().includes(filter) || u.email.toLowerCase().includes(filter) || u.id.toLowerCase() === filter)
      .sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(
      ...users.map((u) =>
        h('li', {}, [
          h('label', {}, [
            h('input', {
              type: 'checkbox',
              value: u.id,
              'data-testid': 'people-option',
              'data-user-id': u.id,
              checked: checked.has(u.id),
            }),
            h('span', { class: 'avatar tiny', style: `--hue:${hueOf(u.id)}`, 'aria-hidden': 'true', text: S.initials(u.name) }),
            h('span', { class: 'grow' }, [h('div', { text: u.name }), h('div', { class: 'sub', text: `${u.email} · ${u.id}` })]),
          ]),
        ]),
      ),
    );
  }

  async submitPeople() {
    const dialog = byId('dialog-people', HTMLDialogElement);
    const submit = byId('people-submit', HTMLButtonElement);
    const picked = [...byId('people-list', HTMLUListElement).querySelectorAll('input:checked')].map((i) =>
      i instanceof HTMLInputElement ? i.value : '',
    );
    const typed = byId('people-ids', HTMLInputElement)
      .value.split(/[\s,]+/)
      .map((s) => s.trim())
      .filter(Boolean);
    const ids = [...new Set([...picked, ...typed])].filter(Boolean);
    if (ids.length === 0) {
      this.dialogError(dialog, 'Pick at least one person, or enter a user id.');
      return;
    }
    submit.disabled = true;
    this.dialogError(dialog, '');
    try {
      const unknown = typed.filter((id) => !this.state.users.has(id));
      if (unknown.length) {
        const { users } = await this.rest.users(unknown);
        S.upsertUsers(this.state, users);
        const missing = unknown.filter((id) => !users.some((u) => u.id === id));
        if (missing.length) {
          this.dialogError(dialog, `No user with id ${missing.join(', ')} in this workspace.`);
          return;
        }
      }
      if (this.peopleMode === 'dm') {
        const { channel } = await this.rest.openDm(ids.filter((id) => id !== this.state.self?.id));
        this.joined(channel);
      } else {
        const id = this.current;
        if (!id) return;
        await this.rest.addMembers(id, ids);
        const ch = this.state.channels.get(id);
        toast(`Added ${ids.map((u) => this.userName(u)).join(', ')} to ${ch ? S.channelTitle(this.state, ch) : 'the channel'}.`, 'info');
      }
      dialog.close();
    } catch (e) {
      this.dialogError(dialog, messageOf(e));
    } finally {
      submit.disabled = false;
    }
  }

  async leaveCurrent() {
    const id = this.current;
    const ch = id ? this.state.channels.get(id) : undefined;
    if (!id || !ch) return;
    if (!window.confirm(`Leave ${S.channelTitle(this.state, ch)}?`)) return;
    try {
      await this.rest.leave(id);
      S.removeChannel(this.state, id);
      this.afterChannelsDropped([id]);
      this.draw();
    } catch (e) {
      toast(messageOf(e));
    }
  }

  // ---- drawing ----

  /** Redraws soon, once for any number of changes. */
  draw() {
    if (this.drawPending) return;
    this.drawPending = true;
    // rAF pauses in background tabs; the timeout keeps the DOM current there too.
    const run = () => this.drawNow();
    requestAnimationFrame(run);
    setTimeout(run, 100);
  }

  drawNow() {
    if (!this.drawPending && this.renderedChannel === this.current) {
      return;
    }
    this.drawPending = false;
    this.drawSidebar();
    this.drawHeader();
    this.drawBanner();
    this.drawMessages();
    this.drawTyping();
    this.drawTitle();
  }

  drawBanner() {
    const el = this.el;
    let text = '';
    if (this.bootFailed) {
      text = 'Cannot reach the server. Retrying…';
    } else if (this.connection === 'reconnecting') {
      text = 'Reconnecting…';
    } else if (this.connection === 'connecting') {
      text = 'Connecting…';
    }
    el.banner.hidden = !text;
    el.bannerText.textContent = text;
    el.banner.dataset.state = this.bootFailed ? 'offline' : this.connection;
    el.reconnectNow.hidden = this.connection !== 'reconnecting';
  }

  drawTitle() {
    let unread = 0;
    for (const ch of this.state.channels.values()) {
      if (ch.id !== this.current) unread += S.unreadCount(ch);
    }
    const team = this.state.team?.name ?? 'confab';
    document.title = `${unread ? `(${unread}) ` : ''}${team} · confab`;
    this.el.menuBadge.hidden = unread === 0;
  }

  drawSidebar() {
    const state = this.state;
    this.el.teamName.textContent = state.team?.name ?? '…';
    const self = state.self;
    if (self && !this.el.me.dataset.userId) {
      this.el.me.dataset.userId = self.id;
      this.el.me.replaceChildren(this.presenceDot(self.id), h('span', { class: 'me-name' }));
    }
    const meName = this.el.me.querySelector('.me-name');
    if (meName && self) meName.textContent = `${state.users.get(self.id)?.name ?? self.name} (you)`;
    for (const dot of this.el.me.querySelectorAll('.presence')) {
      if (dot instanceof HTMLElement) this.updateDot(dot);
    }
    const { channels, dms } = this.sidebarGroups();
    this.drawNavList(this.el.channelsUl, channels, 'No channels yet');
    this.drawNavList(this.el.dmsUl, dms, 'No direct messages yet');
    const alive = new Set([...channels, ...dms].map((c) => c.id));
    for (const id of this.navNodes.keys()) {
      if (!alive.has(id)) this.navNodes.delete(id);
    }
  }

  /**
   * @param {HTMLUListElement} ul
   * @param {ChannelState[]} channels
   * @param {string} emptyText
   */
  drawNavList(ul, channels, emptyText) {
    if (channels.length === 0) {
      syncChildren(ul, [h('li', { class: 'nav-empty', text: emptyText })]);
      return;
    }
    const nodes = channels.map((ch) => {
      let li = this.navNodes.get(ch.id);
      if (!li) {
        li = h('li', { 'data-channel-id': ch.id, 'data-testid': 'channel-item' }, [
          h('a', { href: `#/c/${encodeURIComponent(ch.id)}` }, [
            h('span', { class: 'ch-icon', 'aria-hidden': ch.kind === 'dm' ? undefined : 'true' }),
            h('span', { class: 'ch-name' }),
            h('span', { class: 'badge', 'data-testid': 'unread-badge', hidden: true }),
          ]),
        ]);
        this.navNodes.set(ch.id, li);
      }
      const link = /** @type {HTMLAnchorElement} */ (li.firstElementChild);
      const [icon, name, badge] = /** @type {HTMLElement[]} */ ([...link.children]);
      const title = S.channelTitle(this.state, ch);
      name.textContent = title;
      li.dataset.kind = ch.kind;
      const partner = this.dmPartner(ch);
      const iconKey = partner ? `dot:${partner}` : ch.kind;
      if (icon.dataset.key !== iconKey) {
        icon.dataset.key = iconKey;
        if (partner) icon.replaceChildren(this.presenceDot(partner));
        else icon.textContent = ch.kind === 'private' ? '🔒' : ch.kind === 'group_dm' ? String((ch.members ?? []).length) : '#';
      }
      const dot = icon.querySelector('.presence');
      if (dot instanceof HTMLElement) this.updateDot(dot);
      const current = ch.id === this.current;
      const unread = current ? 0 : S.unreadCount(ch);
      badge.hidden = unread === 0;
      badge.textContent = unread > 99 ? '99+' : String(unread);
      li.classList.toggle('has-unread', unread > 0);
      if (current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
      const kindLabel = { public: 'channel', private: 'private channel', dm: 'direct message', group_dm: 'group message' }[ch.kind];
      const presence = partner ? this.state.presence.get(partner) : undefined;
      const presenceLabel = presence ? `, ${{ active: 'active', away: 'away', dnd: 'do not disturb' }[presence]}` : '';
      link.setAttribute('aria-label', `${title}, ${kindLabel}${presenceLabel}${unread ? `, ${unread} unread` : ''}`);
      return li;
    });
    syncChildren(ul, nodes);
  }

  drawHeader() {
    const el = this.el;
    const ch = this.current ? this.state.channels.get(this.current) : undefined;
    const hasChannel = Boolean(ch);
    el.empty.hidden = hasChannel || this.state.self === null;
    el.wrap.hidden = !hasChannel;
    el.form.hidden = !hasChannel;
    el.composerHint.hidden = !hasChannel;
    el.typing.hidden = !hasChannel;
    if (!ch) {
      el.title.textContent = this.state.team?.name ?? 'confab';
      el.meta.textContent = '';
      el.addMembers.hidden = true;
      el.leave.hidden = true;
      return;
    }
    const title = S.channelTitle(this.state, ch);
    const isChannel = ch.kind === 'public' || ch.kind === 'private';
    el.title.textContent = ch.kind === 'public' ? `#${title}` : ch.kind === 'private' ? `🔒 ${title}` : title;
    const partner = this.dmPartner(ch);
    let meta = { public: 'Public channel', private: 'Private channel', dm: 'Direct message', group_dm: `Group message · ${(ch.members ?? []).length} people` }[ch.kind];
    if (partner) {
      const p = this.state.presence.get(partner);
      if (p) meta += ` · ${{ active: 'Active', away: 'Away', dnd: 'Do not disturb' }[p]}`;
    }
    el.meta.textContent = meta;
    el.addMembers.hidden = !isChannel;
    el.leave.hidden = !isChannel;
    const placeholder = isChannel ? `Message #${title}` : `Message ${title}`;
    if (el.composer.placeholder !== placeholder) {
      el.composer.placeholder = placeholder;
      el.composerLabel.textContent = placeholder;
      el.messages.setAttribute('aria-label', `Messages in ${isChannel ? '#' : ''}${title}`);
      el.list.setAttribute('aria-label', `Messages in ${isChannel ? '#' : ''}${title}`);
    }
  }

  drawMessages() {
    const el = this.el;
    const id = this.current;
    const ch = id ? this.state.channels.get(id) : undefined;
    const box = el.messages;
    const switching = this.renderedChannel !== id;
    if (!ch || !id) {
      syncChildren(el.list, []);
      this.renderedChannel = id;
      return;
    }
    const oldHeight = box.scrollHeight;
    const oldTop = box.scrollTop;
    /** @type {Set<string>} */
    const used = new Set();
    /** @type {HTMLElement[]} */
    const nodes = [];
    /** @type {Message | null} */
    let prev = null;
    let prevMs = 0;
    let prevDay = '';
    for (const m of ch.messages) {
      const ms = S.tsToMillis(m.ts);
      const day = dayKey(ms);
      if (day !== prevDay) {
        nodes.push(this.dividerNode(id, day, ms, used));
        prevDay = day;
        prev = null;
      }
      const node = this.messageNode(m, ms, used);
      const grouped = prev !== null && prev.user === m.user && !prev.deleted && ms - prevMs < GROUP_WINDOW_MS;
      node.classList.toggle('grouped', grouped);
      nodes.push(node);
      prev = m;
      prevMs = ms;
    }
    for (const p of S.pendingIn(this.state, id)) {
      nodes.push(this.pendingNode(p, used));
    }
    for (const key of this.nodes.keys()) {
      if (!used.has(key)) this.nodes.delete(key);
    }
    // Switching conversations or prepending older history is not news: keep the live
    // region quiet while the list is rebuilt.
    const firstKey = ch.messages.length ? `m:${id}:${ch.messages[0].seq}` : null;
    const prepended = !switching && firstKey !== null && this.renderedFirstKey !== null && firstKey !== this.renderedFirstKey;
    const quiet = switching || prepended;
    if (quiet) el.log.setAttribute('aria-live', 'off');
    syncChildren(el.list, nodes);
    if (quiet) setTimeout(() => el.log.setAttribute('aria-live', 'polite'), 300);
    this.renderedChannel = id;
    this.renderedFirstKey = firstKey;

    if (switching || this.stickToBottom) {
      box.scrollTop = box.scrollHeight;
    } else if (prepended) {
      box.scrollTop = oldTop + (box.scrollHeight - oldHeight);
    }

    const older = S.olderRequest(this.state, id);
    const error = this.historyErrors.get(id);
    const loading = this.loadingOlder.has(id) || this.loadingLatest.has(id);
    el.loadOlder.hidden = loading || older === null || Boolean(error);
    el.historyStatus.replaceChildren();
    if (loading) {
      el.historyStatus.textContent = 'Loading…';
    } else if (error) {
      const retry = h('button', { type: 'button', class: 'link', text: 'Try again' });
      retry.addEventListener('click', () => void (ch.historyLoaded ? this.loadOlder() : this.loadLatest(id)));
      el.historyStatus.append(`Could not load messages: ${error} `, retry);
    } else if (ch.historyLoaded && !ch.hasOlder) {
      const title = S.channelTitle(this.state, ch);
      el.historyStatus.textContent =
        ch.kind === 'public' || ch.kind === 'private'
          ? `This is the very beginning of #${title}.`
          : `This is the beginning of your conversation with ${title}.`;
    }
    // Short lists cannot be scrolled up: fetch older pages until the view is full.
    if (older && !loading && !error && box.scrollHeight <= box.clientHeight + LOAD_OLDER_AT_PX) {
      void this.loadOlder();
    }
    if (switching) this.schedulePresenceSub();
    if (this.stickToBottom) this.scheduleMark();
  }

  /**
   * @param {string} channelId
   * @param {string} day
   * @param {number} ms
   * @param {Set<string>} used
   */
  dividerNode(channelId, day, ms, used) {
    const key = `d:${channelId}:${day}`;
    used.add(key);
    let entry = this.nodes.get(key);
    const label = dayLabel(ms);
    if (!entry) {
      entry = { el: h('li', { class: 'day-divider' }), sig: '' };
      this.nodes.set(key, entry);
    }
    if (entry.sig !== label) {
      entry.el.textContent = label;
      entry.sig = label;
    }
    return entry.el;
  }

  /**
   * @param {Message} m
   * @param {number} ms
   * @param {Set<string>} used
   * @returns {HTMLElement}
   */
  messageNode(m, ms, used) {
    const key = `m:${m.channel}:${m.seq}`;
    used.add(key);
    let entry = this.nodes.get(key);
    if (!entry) {
      const date = new Date(ms);
      const node = h('li', { class: 'msg', 'data-testid': 'message', 'data-seq': m.seq, 'data-user-id': m.user, 'data-message-id': m.id }, [
        h('div', { class: 'avatar-wrap' }, [
          h('div', { class: 'avatar', 'aria-hidden': 'true', style: `--hue:${hueOf(m.user)}` }),
          this.presenceDot(m.user),
        ]),
        h('div', { class: 'body' }, [
          h('div', { class: 'meta' }, [
            h('span', { class: 'author', 'data-testid': 'message-author' }),
            h('time', { datetime: date.toISOString(), title: fullFormat.format(date), text: timeFormat.format(date) }),
            h('span', { class: 'edited', hidden: true, text: '(edited)' }),
          ]),
          h('div', { class: 'text', 'data-testid': 'message-text' }),
        ]),
      ]);
      entry = { el: node, sig: '' };
      this.nodes.set(key, entry);
    }
    const node = entry.el;
    const sig = `${m.deleted ? 1 : 0}\u0000${m.edited_ts ?? ''}\u0000${m.text}`;
    if (entry.sig !== sig) {
      entry.sig = sig;
      const text = /** @type {HTMLElement} */ (node.querySelector('.text'));
      if (m.deleted) text.textContent = 'This message was deleted.';
      else renderText(text, m.text);
      node.classList.toggle('deleted', Boolean(m.deleted));
      const edited = node.querySelector('.edited');
      if (edited instanceof HTMLElement) edited.hidden = !m.edited_ts;
    }
    this.drawUserRef(node, m.user);
    return node;
  }

  /**
   * Author name, initials and presence of a message item, updated in place as users load
   * and presence changes (replacing the node would make the live region repeat it).
   * @param {HTMLElement} node
   * @param {string} userId
   */
  drawUserRef(node, userId) {
    const name = this.userName(userId);
    if (node.dataset.name !== name) {
      node.dataset.name = name;
      const author = node.querySelector('.author');
      if (author) author.textContent = name;
      const avatar = node.querySelector('.avatar');
      if (avatar) avatar.textContent = S.initials(name);
    }
    const dot = node.querySelector('.presence');
    if (dot instanceof HTMLElement) this.updateDot(dot);
  }

  /**
   * @param {PendingSend} p
   * @param {Set<string>} used
   * @returns {HTMLElement}
   */
  pendingNode(p, used) {
    const key = `p:${p.client_msg_id}`;
    used.add(key);
    let entry = this.nodes.get(key);
    if (!entry) {
      const userId = p.user || this.state.self?.id || '';
      const node = h('li', { class: 'msg pending', 'data-testid': 'pending-message', 'data-client-msg-id': p.client_msg_id, 'data-user-id': userId }, [
        h('div', { class: 'avatar-wrap' }, [
          h('div', { class: 'avatar', 'aria-hidden': 'true', style: `--hue:${hueOf(userId)}` }),
          this.presenceDot(userId),
        ]),
        h('div', { class: 'body' }, [
          h('div', { class: 'meta' }, [h('span', { class: 'author' })]),
          h('div', { class: 'text' }),
          h('div', { class: 'pending-status' }, [
            h('span', { class: 'status-text', 'data-testid': 'pending-status' }),
            h('button', { type: 'button', class: 'ghost', 'data-action': 'retry', 'data-testid': 'retry-send', text: 'Retry', hidden: true }),
            h('button', { type: 'button', class: 'ghost', 'data-action': 'discard', 'data-testid': 'discard-send', text: 'Discard', hidden: true }),
          ]),
        ]),
      ]);
      renderText(/** @type {HTMLElement} */ (node.querySelector('.text')), p.text);
      entry = { el: node, sig: '' };
      this.nodes.set(key, entry);
      this.drawUserRef(node, userId);
    }
    const node = entry.el;
    const sig = `${p.status}\u0000${p.error ?? ''}`;
    if (entry.sig !== sig) {
      entry.sig = sig;
      node.dataset.status = p.status;
      node.classList.toggle('failed', p.status === 'failed');
      const status = /** @type {HTMLElement} */ (node.querySelector('.status-text'));
      status.textContent =
        p.status === 'failed' ? p.error ?? 'Not sent.' : p.status === 'queued' ? 'Waiting for the connection…' : 'Sending…';
      for (const button of node.querySelectorAll('button[data-action]')) {
        if (button instanceof HTMLButtonElement) button.hidden = p.status !== 'failed';
      }
    }
    this.drawUserRef(node, node.dataset.userId ?? '');
    return node;
  }

  drawTyping() {
    const id = this.current;
    const names = id ? S.typingUsers(this.state, id, Date.now()).map((u) => this.userName(u)) : [];
    const text = S.typingText(names);
    if (this.el.typing.textContent !== text) this.el.typing.textContent = text;
  }

  startTypingTimer() {
    if (this.typingTimer !== null) return;
    this.typingTimer = setInterval(() => {
      this.drawTyping();
      const now = Date.now();
      const anyone = [...this.state.typing.keys()].some((c) => S.typingUsers(this.state, c, now).length > 0);
      if (!anyone && this.typingTimer !== null) {
        clearInterval(this.typingTimer);
        this.typingTimer = null;
      }
    }, 1000);
  }
}

// ---- entry --------------------------------------------------------------------------

function main() {
  const session = loadSession();
  if (session) {
    startChat(session);
  } else {
    showAuth();
  }
}

main();
