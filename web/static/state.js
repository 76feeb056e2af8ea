// @ts-check
/**
 * @file The web client's state and every rule about it, without DOM or network, so that
 * Node's test runner can check it: messages per channel keyed by `seq` and kept in order,
 * duplicates dropped, gaps found and turned into the `before` / `resume` cursors to ask for,
 * sends waiting for their ack (retried with the same `client_msg_id`, so the server's
 * de-duplication makes a retry safe), unread counts, typing and presence.
 *
 * Functions take the state as their first argument and change it in place; the UI redraws
 * after calling them. Time is always passed in (`now`, milliseconds) so tests control it.
 */

/** @typedef {'public' | 'private' | 'dm' | 'group_dm'} ChannelKind */
/** @typedef {'active' | 'away' | 'dnd'} Presence */

/**
 * A stored message as the API sends it (DESIGN.md §5).
 * @typedef {object} Message
 * @property {string} id
 * @property {string} channel
 * @property {string} user
 * @property {string} text
 * @property {number} seq dense per-channel sequence number, from 1
 * @property {string} ts "SECONDS.MICROS"
 * @property {string} client_msg_id
 * @property {string} [thread_ts]
 * @property {string} [edited_ts]
 * @property {boolean} [deleted]
 */

/**
 * @typedef {object} User
 * @property {string} id
 * @property {string} [team]
 * @property {string} name
 * @property {string} email
 * @property {boolean} [is_admin]
 */

/**
 * @typedef {object} Team
 * @property {string} id
 * @property {string} name
 * @property {string} domain
 */

/**
 * A channel, DM or group DM as the API sends it.
 * @typedef {object} Channel
 * @property {string} id
 * @property {string} name empty for DMs
 * @property {boolean} private
 * @property {ChannelKind} kind
 * @property {string[]} [members] DMs and group DMs only
 */

/**
 * One channel of `GET /v1/boot`.
 * @typedef {Channel & {last_seq: number, last_read: number, unread: number}} BootChannel
 */

/**
 * @typedef {object} Boot
 * @property {User} self
 * @property {Team} team
 * @property {BootChannel[]} channels
 * @property {User[]} users
 */

/**
 * What the client holds about one channel.
 * @typedef {object} ChannelState
 * @property {string} id
 * @property {string} name
 * @property {ChannelKind} kind
 * @property {boolean} private
 * @property {string[] | undefined} members
 * @property {boolean} placeholder known only from a message so far; details come with the next boot
 * @property {Message[]} messages loaded messages, ascending by seq, one per seq
 * @property {Map<number, Message>} bySeq the same messages by seq
 * @property {number | null} cursor every seq up to here is either loaded or reachable by
 *   paging back with `before`; above it only what `messages` holds. The resume cursor.
 *   `null` until something anchors it (boot, a history page or a first message).
 * @property {Set<number>} absent seqs above the cursor that a gap fetch showed do not exist
 * @property {Set<string>} gapsInFlight keys `from-to` of gap fetches not yet answered
 * @property {number} lastSeq highest seq known to exist
 * @property {number} lastRead the read marker
 * @property {boolean} historyLoaded whether the latest page was fetched
 * @property {boolean} hasOlder whether paging back may find more
 */

/**
 * A message typed here and not yet acknowledged by the server.
 * @typedef {object} PendingSend
 * @property {string} client_msg_id
 * @property {string} channel
 * @property {string} text
 * @property {string} user
 * @property {'queued' | 'sending' | 'failed'} status queued: waits for a connection
 * @property {number} attempts sends so far
 * @property {number} created
 * @property {string} [error] why it failed, for the user
 */

/**
 * @typedef {object} ClientState
 * @property {User | null} self
 * @property {Team | null} team
 * @property {Map<string, ChannelState>} channels
 * @property {Map<string, User>} users
 * @property {Set<string>} usersRequested ids asked for and not answered yet
 * @property {Map<string, Presence>} presence
 * @property {Map<string, Map<string, number>>} typing channel → user → expiry (ms)
 * @property {Map<string, PendingSend>} pending by client_msg_id, in creation order
 */

/** How long a `user_typing` keeps someone shown as typing. */
export const TYPING_SHOW_MS = 5000;
/** Least time between two `typing` commands of one composer. */
export const TYPING_SEND_EVERY_MS = 3000;
/** Page size of history requests. */
export const PAGE_SIZE = 50;
/** Largest page the server returns (`limits::MAX_HISTORY_LIMIT`). */
export const MAX_PAGE = 200;

/** @returns {ClientState} */
export function createState() {
  return {
    self: null,
    team: null,
    channels: new Map(),
    users: new Map(),
    usersRequested: new Set(),
    presence: new Map(),
    typing: new Map(),
    pending: new Map(),
  };
}

/**
 * @param {Channel} channel
 * @param {number | null} cursor
 * @returns {ChannelState}
 */
function newChannel(channel, cursor) {
  return {
    id: channel.id,
    name: channel.name,
    kind: channel.kind,
    private: channel.private,
    members: channel.members,
    placeholder: false,
    messages: [],
    bySeq: new Map(),
    cursor,
    absent: new Set(),
    gapsInFlight: new Set(),
    lastSeq: cursor ?? 0,
    lastRead: 0,
    historyLoaded: false,
    hasOlder: true,
  };
}

/**
 * Takes in the boot snapshot. On a reconnect the held channels keep their messages and
 * cursors (resume replays the rest); channels named in `prune` that boot no longer lists
 * were left while away and are dropped.
 * @param {ClientState} state
 * @param {Boot} boot
 * @param {{prune?: Iterable<string>}} [options]
 * @returns {string[]} ids of dropped channels
 */
export function applyBoot(state, boot, options = {}) {
  state.self = boot.self;
  state.team = boot.team;
  upsertUsers(state, [boot.self, ...boot.users]);
  const listed = new Set();
  for (const bc of boot.channels) {
    listed.add(bc.id);
    let ch = state.channels.get(bc.id);
    if (!ch) {
      ch = newChannel(bc, bc.last_seq);
      ch.lastRead = bc.last_read;
      state.channels.set(bc.id, ch);
    } else {
      updateChannelInfo(ch, bc);
      if (ch.cursor === null) {
        advanceFrom(ch, bc.last_seq);
      }
    }
    ch.lastSeq = Math.max(ch.lastSeq, bc.last_seq);
    ch.lastRead = Math.max(ch.lastRead, bc.last_read);
  }
  /** @type {string[]} */
  const dropped = [];
  for (const id of options.prune ?? []) {
    if (!listed.has(id) && state.channels.has(id)) {
      removeChannel(state, id);
      dropped.push(id);
    }
  }
  return dropped;
}

/**
 * @param {ChannelState} ch
 * @param {Channel} channel
 */
function updateChannelInfo(ch, channel) {
  ch.name = channel.name;
  ch.kind = channel.kind;
  ch.private = channel.private;
  if (channel.members) {
    ch.members = channel.members;
  }
  ch.placeholder = false;
}

/**
 * A channel the user was added to (`channel_joined`, or their own create/join/DM call).
 * Its cursor stays unset until its latest page or first message arrives.
 * @param {ClientState} state
 * @param {Channel} channel
 * @returns {ChannelState}
 */
export function addChannel(state, channel) {
  const ch = state.channels.get(channel.id);
  if (ch) {
    updateChannelInfo(ch, channel);
    return ch;
  }
  const created = newChannel(channel, null);
  state.channels.set(channel.id, created);
  return created;
}

/**
 * The user left the channel (`channel_left`, or the resume reply says it is gone).
 * @param {ClientState} state
 * @param {string} channelId
 */
export function removeChannel(state, channelId) {
  state.channels.delete(channelId);
  state.typing.delete(channelId);
  for (const [id, p] of state.pending) {
    if (p.channel === channelId) {
      state.pending.delete(id);
    }
  }
}

/**
 * The channel of a message from a channel this client did not know: kept as a placeholder
 * so nothing is lost, until boot names it.
 * @param {ClientState} state
 * @param {string} channelId
 * @returns {ChannelState}
 */
function channelFor(state, channelId) {
  let ch = state.channels.get(channelId);
  if (!ch) {
    ch = newChannel(
      {
        id: channelId,
        name: '',
        private: true,
        kind: channelId.startsWith('D') ? 'dm' : 'private',
      },
      null,
    );
    ch.placeholder = true;
    state.channels.set(channelId, ch);
  }
  return ch;
}

/**
 * Moves the cursor up over every seq that is loaded or known absent, anchoring it at
 * `anchor` first if it was unset.
 * @param {ChannelState} ch
 * @param {number} [anchor]
 */
function advanceFrom(ch, anchor) {
  if (ch.cursor === null) {
    if (anchor === undefined) {
      return;
    }
    ch.cursor = anchor;
  }
  let c = ch.cursor;
  while (ch.bySeq.has(c + 1) || ch.absent.has(c + 1)) {
    c += 1;
    ch.absent.delete(c);
  }
  ch.cursor = c;
  ch.lastSeq = Math.max(ch.lastSeq, c);
}

/**
 * Index of the first message with `seq >= target` (binary search).
 * @param {Message[]} list
 * @param {number} target
 */
function lowerBound(list, target) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].seq < target) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/**
 * Stores a message at its place by seq. A second copy of a seq is dropped.
 * @param {ChannelState} ch
 * @param {Message} message
 * @returns {boolean} whether it was new
 */
function insert(ch, message) {
  if (ch.bySeq.has(message.seq)) {
    return false;
  }
  ch.bySeq.set(message.seq, message);
  const list = ch.messages;
  if (list.length === 0 || list[list.length - 1].seq < message.seq) {
    list.push(message);
  } else {
    list.splice(lowerBound(list, message.seq), 0, message);
  }
  ch.lastSeq = Math.max(ch.lastSeq, message.seq);
  return true;
}

/**
 * @typedef {object} Received
 * @property {boolean} isNew false for a duplicate (same channel and seq)
 * @property {boolean} gap whether the channel now has missing seqs above its cursor
 * @property {boolean} unknownChannel whether the channel was not known before
 */

/**
 * A message from a `message` event, a resume replay or an ack. Settles the pending send
 * with the same `client_msg_id`, whichever of ack and event comes first.
 * @param {ClientState} state
 * @param {Message} message
 * @returns {Received}
 */
export function receiveMessage(state, message) {
  const unknownChannel = !state.channels.has(message.channel);
  const ch = channelFor(state, message.channel);
  const pending = message.client_msg_id ? state.pending.get(message.client_msg_id) : undefined;
  if (pending && pending.channel === message.channel) {
    state.pending.delete(message.client_msg_id);
  }
  const isNew = insert(ch, message);
  if (isNew) {
    // The first message of an unanchored channel anchors it: what came before is history.
    advanceFrom(ch, message.seq - 1);
    if (state.self && message.user === state.self.id && ch.lastRead >= message.seq - 1) {
      // Writing a message means having read up to it.
      ch.lastRead = message.seq;
    }
    const typers = state.typing.get(message.channel);
    typers?.delete(message.user);
  }
  return { isNew, gap: hasGap(ch), unknownChannel };
}

/**
 * A message was edited (`message_changed`): replaces the stored copy, if loaded.
 * @param {ClientState} state
 * @param {Message} message
 * @returns {boolean} whether a loaded message changed
 */
export function changeMessage(state, message) {
  const ch = state.channels.get(message.channel);
  const old = ch?.bySeq.get(message.seq);
  if (!ch || !old) {
    return false;
  }
  ch.bySeq.set(message.seq, message);
  ch.messages[lowerBound(ch.messages, message.seq)] = message;
  return true;
}

/**
 * A message was deleted (`message_deleted`): it stays in place, marked, so seqs stay dense.
 * @param {ClientState} state
 * @param {string} channelId
 * @param {number} seq
 * @returns {boolean}
 */
export function deleteMessage(state, channelId, seq) {
  const ch = state.channels.get(channelId);
  const old = ch?.bySeq.get(seq);
  if (!ch || !old) {
    return false;
  }
  const marked = { ...old, deleted: true, text: '' };
  ch.bySeq.set(seq, marked);
  ch.messages[lowerBound(ch.messages, seq)] = marked;
  return true;
}

/**
 * @param {ChannelState} ch
 * @returns {boolean}
 */
export function hasGap(ch) {
  if (ch.cursor === null || ch.messages.length === 0) {
    return false;
  }
  return ch.messages[ch.messages.length - 1].seq > ch.cursor + 1;
}

/**
 * @typedef {object} GapRequest
 * @property {string} channel
 * @property {number} from first missing seq
 * @property {number} to last missing seq this request covers
 * @property {number} before the `before` parameter: `from + limit`
 * @property {number} limit the `limit` parameter
 */

/**
 * The missing seq ranges above the channel's cursor, as inclusive `[from, to]` pairs.
 * @param {ChannelState} ch
 * @returns {Array<[number, number]>}
 */
export function missingRanges(ch) {
  /** @type {Array<[number, number]>} */
  const ranges = [];
  if (ch.cursor === null) {
    return ranges;
  }
  let expected = ch.cursor + 1;
  for (let i = lowerBound(ch.messages, expected); i < ch.messages.length; i++) {
    const seq = ch.messages[i].seq;
    if (seq > expected) {
      let from = expected;
      let to = seq - 1;
      // Seqs already known absent do not need fetching.
      while (from <= to && ch.absent.has(from)) from++;
      while (to >= from && ch.absent.has(to)) to--;
      if (from <= to) {
        ranges.push([from, to]);
      }
    }
    expected = seq + 1;
  }
  return ranges;
}

/**
 * History requests that fill the channel's gaps, lowest first, each at most one page
 * (the lowest part of a larger gap first, so the cursor can move). Requests already in
 * flight are not repeated; the returned ones count as in flight until
 * {@link applyGapPage} or {@link gapFailed}.
 * @param {ClientState} state
 * @param {string} channelId
 * @returns {GapRequest[]}
 */
export function takeGapRequests(state, channelId) {
  const ch = state.channels.get(channelId);
  if (!ch) {
    return [];
  }
  /** @type {GapRequest[]} */
  const requests = [];
  for (const [from, to] of missingRanges(ch)) {
    const limit = Math.min(to - from + 1, MAX_PAGE);
    const request = { channel: channelId, from, to: from + limit - 1, before: from + limit, limit };
    const key = `${request.from}-${request.to}`;
    if (!overlapsInFlight(ch, request.from, request.to)) {
      ch.gapsInFlight.add(key);
      requests.push(request);
    }
  }
  return requests;
}

/**
 * @param {ChannelState} ch
 * @param {number} from
 * @param {number} to
 */
function overlapsInFlight(ch, from, to) {
  for (const key of ch.gapsInFlight) {
    const [a, b] = key.split('-').map(Number);
    if (a <= to && from <= b) {
      return true;
    }
  }
  return false;
}

/**
 * The answer to a gap request: its messages go in, and the seqs of the range the server
 * did not return count as absent, so a hole the server cannot fill is not asked for again.
 * @param {ClientState} state
 * @param {GapRequest} request
 * @param {Message[]} messages
 */
export function applyGapPage(state, request, messages) {
  const ch = state.channels.get(request.channel);
  if (!ch) {
    return;
  }
  ch.gapsInFlight.delete(`${request.from}-${request.to}`);
  for (const m of messages) {
    receiveMessage(state, m);
  }
  for (let seq = request.from; seq <= request.to; seq++) {
    if (!ch.bySeq.has(seq) && ch.cursor !== null && seq > ch.cursor) {
      ch.absent.add(seq);
    }
  }
  advanceFrom(ch);
}

/**
 * A gap request failed; it may be asked for again.
 * @param {ClientState} state
 * @param {GapRequest} request
 */
export function gapFailed(state, request) {
  state.channels.get(request.channel)?.gapsInFlight.delete(`${request.from}-${request.to}`);
}

/**
 * A history page (`GET /v1/channels/{id}/history`, newest first). `latest` is the first
 * page of a channel (no `before`): it anchors a channel that had no cursor. `older` pages
 * come from scrolling back.
 * @param {ClientState} state
 * @param {string} channelId
 * @param {{messages: Message[], has_more: boolean}} page
 * @param {'latest' | 'older'} kind
 * @returns {{added: number, gap: boolean}}
 */
export function applyHistory(state, channelId, page, kind) {
  const ch = state.channels.get(channelId);
  if (!ch) {
    return { added: 0, gap: false };
  }
  let added = 0;
  let top = 0;
  for (const m of page.messages) {
    top = Math.max(top, m.seq);
    if (receiveMessage(state, m).isNew) {
      added++;
    }
  }
  if (kind === 'latest') {
    ch.historyLoaded = true;
    if (ch.cursor === null) {
      advanceFrom(ch, top);
    }
  }
  const lowestInPage = page.messages.reduce((low, m) => Math.min(low, m.seq), Infinity);
  const lowest = ch.messages.length ? ch.messages[0].seq : Infinity;
  if (lowest <= 1) {
    ch.hasOlder = false;
  } else if (lowestInPage <= lowest) {
    // The page reached the bottom of what is loaded: its has_more is the answer.
    ch.hasOlder = page.has_more;
  } else if (page.messages.length === 0 && kind === 'older') {
    ch.hasOlder = false;
  }
  return { added, gap: hasGap(ch) };
}

/**
 * The request for the page before the oldest loaded message, or null when there is none
 * (or the latest page has not been fetched yet).
 * @param {ClientState} state
 * @param {string} channelId
 * @returns {{before: number, limit: number} | null}
 */
export function olderRequest(state, channelId) {
  const ch = state.channels.get(channelId);
  if (!ch || !ch.historyLoaded || !ch.hasOlder || ch.messages.length === 0) {
    return null;
  }
  const lowest = ch.messages[0].seq;
  if (lowest <= 1) {
    return null;
  }
  return { before: lowest, limit: PAGE_SIZE };
}

/**
 * The `cursors` of a `resume` command: for each anchored channel the last seq up to which
 * nothing is missing. The server replays everything after it.
 * @param {ClientState} state
 * @returns {Record<string, number>}
 */
export function resumeCursors(state) {
  /** @type {Record<string, number>} */
  const cursors = {};
  for (const ch of state.channels.values()) {
    if (ch.cursor !== null) {
      cursors[ch.id] = ch.cursor;
    }
  }
  return cursors;
}

/**
 * @param {ChannelState} ch
 * @returns {number}
 */
export function unreadCount(ch) {
  return Math.max(0, ch.lastSeq - ch.lastRead);
}

/**
 * The read marker moved (`channel_marked`, or this client marked). It never moves back.
 * @param {ClientState} state
 * @param {string} channelId
 * @param {number} seq
 */
export function markRead(state, channelId, seq) {
  const ch = state.channels.get(channelId);
  if (ch) {
    ch.lastRead = Math.max(ch.lastRead, Math.min(seq, ch.lastSeq));
  }
}

/**
 * The seq a `mark` command should send once the newest loaded message of the channel is
 * on screen, or null when the marker is already there.
 * @param {ClientState} state
 * @param {string} channelId
 * @returns {number | null}
 */
export function markTarget(state, channelId) {
  const ch = state.channels.get(channelId);
  if (!ch || ch.messages.length === 0) {
    return null;
  }
  const newest = ch.messages[ch.messages.length - 1].seq;
  return newest > ch.lastRead ? newest : null;
}

// ---- sending ------------------------------------------------------------------------

/**
 * A message typed by the user; it shows as pending until acknowledged.
 * @param {ClientState} state
 * @param {{channel: string, text: string, client_msg_id: string, now: number}} send
 * @returns {PendingSend}
 */
export function addPending(state, send) {
  /** @type {PendingSend} */
  const pending = {
    client_msg_id: send.client_msg_id,
    channel: send.channel,
    text: send.text,
    user: state.self?.id ?? '',
    status: 'queued',
    attempts: 0,
    created: send.now,
  };
  state.pending.set(send.client_msg_id, pending);
  return pending;
}

/**
 * @typedef {object} MessageCommand
 * @property {'message'} type
 * @property {string} channel
 * @property {string} text
 * @property {string} client_msg_id
 */

/**
 * Marks a pending send as going out and returns the command to send. A retry returns the
 * same `client_msg_id` as the first attempt: the server answers a repeat with the
 * original message instead of storing a second one.
 * @param {ClientState} state
 * @param {string} clientMsgId
 * @returns {MessageCommand | null} null when it is no longer pending (already acked)
 */
export function startSend(state, clientMsgId) {
  const p = state.pending.get(clientMsgId);
  if (!p) {
    return null;
  }
  p.status = 'sending';
  p.attempts += 1;
  delete p.error;
  return { type: 'message', channel: p.channel, text: p.text, client_msg_id: p.client_msg_id };
}

/** The Retry button: same as {@link startSend}. */
export const retrySend = startSend;

/**
 * The send could not go out for lack of a connection: it waits for the next one.
 * @param {ClientState} state
 * @param {string} clientMsgId
 */
export function queueSend(state, clientMsgId) {
  const p = state.pending.get(clientMsgId);
  if (p) {
    p.status = 'queued';
  }
}

/**
 * The server refused the send or it timed out: it shows with a Retry button.
 * @param {ClientState} state
 * @param {string} clientMsgId
 * @param {string} error
 */
export function failSend(state, clientMsgId, error) {
  const p = state.pending.get(clientMsgId);
  if (p) {
    p.status = 'failed';
    p.error = error;
  }
}

/**
 * The ack of a send: the stored message replaces the pending one, placed by its seq.
 * @param {ClientState} state
 * @param {string} clientMsgId
 * @param {Message} message
 * @returns {Received}
 */
export function ackSend(state, clientMsgId, message) {
  state.pending.delete(clientMsgId);
  return receiveMessage(state, message);
}

/**
 * The user gave up on a failed send.
 * @param {ClientState} state
 * @param {string} clientMsgId
 */
export function discardSend(state, clientMsgId) {
  state.pending.delete(clientMsgId);
}

/**
 * Pending sends of a channel, oldest first.
 * @param {ClientState} state
 * @param {string} channelId
 * @returns {PendingSend[]}
 */
export function pendingIn(state, channelId) {
  return [...state.pending.values()].filter((p) => p.channel === channelId);
}

/**
 * Sends waiting for a connection, oldest first.
 * @param {ClientState} state
 * @returns {PendingSend[]}
 */
export function queuedSends(state) {
  return [...state.pending.values()].filter((p) => p.status === 'queued');
}

/**
 * The connection dropped: sends still waiting for their ack go out again (same id) on
 * the next connection.
 * @param {ClientState} state
 */
export function requeueInFlight(state) {
  for (const p of state.pending.values()) {
    if (p.status === 'sending') {
      p.status = 'queued';
    }
  }
}

// ---- users, presence, typing --------------------------------------------------------

/**
 * @param {ClientState} state
 * @param {User[]} users
 */
export function upsertUsers(state, users) {
  for (const u of users) {
    state.users.set(u.id, u);
    state.usersRequested.delete(u.id);
  }
}

/**
 * Ids among `ids` that are neither known nor already asked for; they count as asked for
 * until {@link upsertUsers} or {@link usersFailed}.
 * @param {ClientState} state
 * @param {Iterable<string>} ids
 * @returns {string[]}
 */
export function takeMissingUsers(state, ids) {
  /** @type {string[]} */
  const missing = [];
  for (const id of ids) {
    if (id && !state.users.has(id) && !state.usersRequested.has(id)) {
      state.usersRequested.add(id);
      missing.push(id);
    }
  }
  return missing;
}

/**
 * A user lookup failed (or some ids were not returned); they may be asked for again.
 * @param {ClientState} state
 * @param {Iterable<string>} ids
 */
export function usersFailed(state, ids) {
  for (const id of ids) {
    state.usersRequested.delete(id);
  }
}

/**
 * @param {ClientState} state
 * @param {Array<{id: string, presence: Presence}>} users
 */
export function applyPresence(state, users) {
  for (const u of users) {
    state.presence.set(u.id, u.presence);
  }
}

/**
 * @param {ClientState} state
 * @param {string} channelId
 * @param {string} userId
 * @param {number} now
 */
export function typingStarted(state, channelId, userId, now) {
  let typers = state.typing.get(channelId);
  if (!typers) {
    typers = new Map();
    state.typing.set(channelId, typers);
  }
  typers.set(userId, now + TYPING_SHOW_MS);
}

/**
 * Users shown as typing in a channel at `now`; expired entries are dropped.
 * @param {ClientState} state
 * @param {string} channelId
 * @param {number} now
 * @returns {string[]}
 */
export function typingUsers(state, channelId, now) {
  const typers = state.typing.get(channelId);
  if (!typers) {
    return [];
  }
  for (const [user, until] of typers) {
    if (until <= now) {
      typers.delete(user);
    }
  }
  return [...typers.keys()];
}

/**
 * Throttle of outgoing `typing` commands: whether to send one now.
 * @param {number | null} lastSent when the last one went out, or null
 * @param {number} now
 */
export function shouldSendTyping(lastSent, now) {
  return lastSent === null || now - lastSent >= TYPING_SEND_EVERY_MS;
}

// ---- display helpers (pure) ---------------------------------------------------------

/**
 * A `ts` of "SECONDS.MICROS" as milliseconds since the epoch.
 * @param {string} ts
 * @returns {number}
 */
export function tsToMillis(ts) {
  const [secs, micros = '0'] = String(ts).split('.');
  const s = Number(secs);
  const us = Number(micros.padEnd(6, '0').slice(0, 6));
  if (!Number.isFinite(s)) {
    return 0;
  }
  return s * 1000 + (Number.isFinite(us) ? Math.floor(us / 1000) : 0);
}

/**
 * What to call a channel in the sidebar and header: `#name` for channels, the other
 * members' names for DMs.
 * @param {ClientState} state
 * @param {ChannelState} ch
 * @returns {string}
 */
export function channelTitle(state, ch) {
  if (ch.kind === 'public' || ch.kind === 'private') {
    return ch.name || ch.id;
  }
  const selfId = state.self?.id;
  const members = ch.members ?? [];
  const others = members.filter((id) => id !== selfId);
  if (others.length === 0) {
    const me = selfId ? state.users.get(selfId) : undefined;
    return members.length ? `${me?.name ?? 'You'} (you)` : ch.name || 'Direct message';
  }
  return others.map((id) => state.users.get(id)?.name ?? id).join(', ');
}

/**
 * Up to two letters for an avatar.
 * @param {string} name
 * @returns {string}
 */
export function initials(name) {
  const words = name.trim().split(/[\s._@-]+/).filter(Boolean);
  if (words.length === 0) {
    return '?';
  }
  const letters = words.length === 1 ? [...words[0]].slice(0, 2) : [[...words[0]][0], [...words[1]][0]];
  return letters.join('').toUpperCase();
}

/**
 * "X is typing…", "X and Y are typing…", "Several people are typing…", or "".
 * @param {string[]} names
 * @returns {string}
 */
export function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}
