// @ts-check
// Unit tests of the web client's pure state (web/static/state.js): run with
// `node --test web/tests/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as S from '../static/state.js';

const SELF = { id: 'U1', team: 'T1', name: 'Ada Lovelace', email: 'ada@acme.test' };
const BOB = { id: 'U2', team: 'T1', name: 'Bob', email: 'bob@acme.test' };

/**
 * @param {string} channel
 * @param {number} seq
 * @param {Partial<import('../static/state.js').Message>} [extra]
 * @returns {import('../static/state.js').Message}
 */
function msg(channel, seq, extra = {}) {
  return {
    id: `M${channel}${seq}`,
    channel,
    user: BOB.id,
    text: `message ${seq}`,
    seq,
    ts: `${1_700_000_000 + seq}.000001`,
    client_msg_id: `c-${channel}-${seq}`,
    ...extra,
  };
}

/**
 * A state after a boot holding `channels` ({id, last_seq, last_read}).
 * @param {Array<{id: string, last_seq: number, last_read?: number, kind?: import('../static/state.js').ChannelKind, members?: string[]}>} channels
 */
function booted(channels) {
  const state = S.createState();
  S.applyBoot(state, {
    self: SELF,
    team: { id: 'T1', name: 'Acme', domain: 'acme' },
    users: [BOB],
    channels: channels.map((c) => ({
      id: c.id,
      name: c.kind === 'dm' ? '' : c.id.toLowerCase(),
      kind: c.kind ?? 'public',
      private: c.kind !== undefined && c.kind !== 'public',
      members: c.members,
      last_seq: c.last_seq,
      last_read: c.last_read ?? c.last_seq,
      unread: c.last_seq - (c.last_read ?? c.last_seq),
    })),
  });
  return state;
}

/**
 * @param {import('../static/state.js').ClientState} state
 * @param {string} id
 */
function seqs(state, id) {
  return state.channels.get(id)?.messages.map((m) => m.seq) ?? [];
}

/**
 * @param {import('../static/state.js').ClientState} state
 * @param {string} id
 */
function chan(state, id) {
  const ch = state.channels.get(id);
  assert.ok(ch, `channel ${id} is held`);
  return ch;
}

test('messages are kept in seq order whatever order they arrive in', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  for (const seq of [3, 1, 5, 2, 4]) S.receiveMessage(state, msg('C1', seq));
  assert.deepEqual(seqs(state, 'C1'), [1, 2, 3, 4, 5]);
  assert.equal(chan(state, 'C1').cursor, 5);
});

test('an older history page is inserted below what is loaded', () => {
  const state = booted([{ id: 'C1', last_seq: 100 }]);
  const latest = { messages: [100, 99, 98].map((s) => msg('C1', s)), has_more: true };
  S.applyHistory(state, 'C1', latest, 'latest');
  assert.deepEqual(S.olderRequest(state, 'C1'), { before: 98, limit: S.PAGE_SIZE });
  const older = { messages: [97, 96].map((s) => msg('C1', s)), has_more: true };
  S.applyHistory(state, 'C1', older, 'older');
  S.receiveMessage(state, msg('C1', 101));
  assert.deepEqual(seqs(state, 'C1'), [96, 97, 98, 99, 100, 101]);
  assert.deepEqual(S.olderRequest(state, 'C1'), { before: 96, limit: S.PAGE_SIZE });
});

test('the beginning of a channel ends paging back', () => {
  const state = booted([{ id: 'C1', last_seq: 3 }]);
  S.applyHistory(state, 'C1', { messages: [3, 2, 1].map((s) => msg('C1', s)), has_more: false }, 'latest');
  assert.equal(S.olderRequest(state, 'C1'), null);
  assert.equal(chan(state, 'C1').hasOlder, false);

  const other = booted([{ id: 'C2', last_seq: 90 }]);
  S.applyHistory(other, 'C2', { messages: [90, 89].map((s) => msg('C2', s)), has_more: false }, 'latest');
  assert.equal(S.olderRequest(other, 'C2'), null, 'has_more=false is believed');
});

test('older pages are not requested before the latest page', () => {
  const state = booted([{ id: 'C1', last_seq: 10 }]);
  S.receiveMessage(state, msg('C1', 11));
  assert.equal(S.olderRequest(state, 'C1'), null);
});

test('a message that arrives twice is stored once', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  assert.equal(S.receiveMessage(state, msg('C1', 1)).isNew, true);
  assert.equal(S.receiveMessage(state, msg('C1', 1)).isNew, false);
  // A replayed copy after a resume, and the same seq in a history page.
  S.receiveMessage(state, msg('C1', 2));
  S.applyHistory(state, 'C1', { messages: [2, 1].map((s) => msg('C1', s)), has_more: false }, 'latest');
  assert.deepEqual(seqs(state, 'C1'), [1, 2]);
});

test('the same seq in different channels are different messages', () => {
  const state = booted([
    { id: 'C1', last_seq: 0 },
    { id: 'C2', last_seq: 0 },
  ]);
  S.receiveMessage(state, msg('C1', 1));
  S.receiveMessage(state, msg('C2', 1));
  assert.deepEqual(seqs(state, 'C1'), [1]);
  assert.deepEqual(seqs(state, 'C2'), [1]);
});

test('a jump in seq is a gap: it is requested with before/limit and closes when filled', () => {
  const state = booted([{ id: 'C1', last_seq: 10 }]);
  assert.equal(S.receiveMessage(state, msg('C1', 11)).gap, false);
  const received = S.receiveMessage(state, msg('C1', 14));
  assert.equal(received.gap, true);
  assert.deepEqual(S.missingRanges(chan(state, 'C1')), [[12, 13]]);
  assert.deepEqual(S.resumeCursors(state), { C1: 11 }, 'resume from the last contiguous seq');

  const requests = S.takeGapRequests(state, 'C1');
  assert.deepEqual(requests, [{ channel: 'C1', from: 12, to: 13, before: 14, limit: 2 }]);
  assert.deepEqual(S.takeGapRequests(state, 'C1'), [], 'a request in flight is not repeated');

  // The history answer is newest first.
  S.applyGapPage(state, requests[0], [msg('C1', 13), msg('C1', 12)]);
  assert.deepEqual(seqs(state, 'C1'), [11, 12, 13, 14]);
  assert.equal(S.hasGap(chan(state, 'C1')), false);
  assert.deepEqual(S.resumeCursors(state), { C1: 14 });
});

test('several gaps give several requests, a large one a page at a time from its bottom', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.receiveMessage(state, msg('C1', 1));
  S.receiveMessage(state, msg('C1', 3));
  S.receiveMessage(state, msg('C1', 500));
  assert.deepEqual(S.missingRanges(chan(state, 'C1')), [[2, 2], [4, 499]]);
  const requests = S.takeGapRequests(state, 'C1');
  assert.deepEqual(
    requests.map((r) => [r.from, r.to, r.before, r.limit]),
    [
      [2, 2, 3, 1],
      [4, 203, 204, S.MAX_PAGE],
    ],
  );
  S.applyGapPage(state, requests[0], [msg('C1', 2)]);
  const page = [];
  for (let s = 203; s >= 4; s--) page.push(msg('C1', s));
  S.applyGapPage(state, requests[1], page);
  assert.equal(chan(state, 'C1').cursor, 203);
  assert.deepEqual(
    S.takeGapRequests(state, 'C1').map((r) => [r.from, r.to, r.before, r.limit]),
    [[204, 403, 404, S.MAX_PAGE]],
  );
});

test('a failed gap fetch may be asked for again; seqs the server does not have are not', () => {
  const state = booted([{ id: 'C1', last_seq: 10 }]);
  S.receiveMessage(state, msg('C1', 14));
  const [first] = S.takeGapRequests(state, 'C1');
  S.gapFailed(state, first);
  const [again] = S.takeGapRequests(state, 'C1');
  assert.deepEqual(again, first);
  // Only 11 and 13 come back: 12 does not exist (e.g. purged), so it is not asked again.
  S.applyGapPage(state, again, [msg('C1', 13), msg('C1', 11)]);
  assert.equal(S.hasGap(chan(state, 'C1')), false);
  assert.deepEqual(S.resumeCursors(state), { C1: 14 });
  assert.deepEqual(S.takeGapRequests(state, 'C1'), []);
});

test('resume cursors: boot last_seq for unopened channels, nothing for unanchored ones', () => {
  const state = booted([
    { id: 'C1', last_seq: 42 },
    { id: 'C2', last_seq: 0 },
  ]);
  S.addChannel(state, { id: 'C3', name: 'new', private: false, kind: 'public' });
  assert.deepEqual(S.resumeCursors(state), { C1: 42, C2: 0 });
  // Its latest page anchors the joined channel at its newest message.
  S.applyHistory(state, 'C3', { messages: [7, 6].map((s) => msg('C3', s)), has_more: true }, 'latest');
  assert.deepEqual(S.resumeCursors(state), { C1: 42, C2: 0, C3: 7 });
  // An empty channel anchors at 0.
  S.addChannel(state, { id: 'C4', name: 'empty', private: false, kind: 'public' });
  S.applyHistory(state, 'C4', { messages: [], has_more: false }, 'latest');
  assert.equal(S.resumeCursors(state).C4, 0);
});

test('the first message of an unanchored channel anchors it, so history below is no gap', () => {
  const state = booted([]);
  S.addChannel(state, { id: 'D1', name: '', private: true, kind: 'dm', members: ['U1', 'U2'] });
  const r = S.receiveMessage(state, msg('D1', 40));
  assert.equal(r.gap, false);
  assert.deepEqual(S.resumeCursors(state), { D1: 40 });
});

test('a message of an unknown channel is kept, in a placeholder that a later boot names', () => {
  const state = booted([]);
  const r = S.receiveMessage(state, msg('C9', 1));
  assert.equal(r.unknownChannel, true);
  assert.equal(chan(state, 'C9').placeholder, true);
  S.applyBoot(state, {
    self: SELF,
    team: { id: 'T1', name: 'Acme', domain: 'acme' },
    users: [],
    channels: [{ id: 'C9', name: 'ops', kind: 'public', private: false, last_seq: 1, last_read: 0, unread: 1 }],
  });
  assert.equal(chan(state, 'C9').placeholder, false);
  assert.equal(chan(state, 'C9').name, 'ops');
  assert.deepEqual(seqs(state, 'C9'), [1]);
});

test('a boot after a reconnect keeps messages and cursors, adds and drops channels', () => {
  const state = booted([
    { id: 'C1', last_seq: 5 },
    { id: 'C2', last_seq: 2 },
  ]);
  S.receiveMessage(state, msg('C1', 6));
  const dropped = S.applyBoot(
    state,
    {
      self: SELF,
      team: { id: 'T1', name: 'Acme', domain: 'acme' },
      users: [],
      channels: [
        { id: 'C1', name: 'c1', kind: 'public', private: false, last_seq: 9, last_read: 5, unread: 4 },
        { id: 'C3', name: 'c3', kind: 'public', private: false, last_seq: 4, last_read: 1, unread: 3 },
      ],
    },
    { prune: ['C1', 'C2'] },
  );
  assert.deepEqual(dropped, ['C2']);
  assert.deepEqual([...state.channels.keys()].sort(), ['C1', 'C3']);
  assert.deepEqual(seqs(state, 'C1'), [6]);
  // C1 resumes from what it holds (the server replays 7..9); C3 from its boot state.
  assert.deepEqual(S.resumeCursors(state), { C1: 6, C3: 4 });
  assert.equal(S.unreadCount(chan(state, 'C1')), 4);
  assert.equal(S.unreadCount(chan(state, 'C3')), 3);
});

test('a send is pending until its ack, which puts the stored message in place by seq', () => {
  const state = booted([{ id: 'C1', last_seq: 3 }]);
  const pending = S.addPending(state, { channel: 'C1', text: 'hi', client_msg_id: 'cm-1', now: 1000 });
  assert.equal(pending.status, 'queued');
  assert.equal(pending.user, SELF.id);
  const command = S.startSend(state, 'cm-1');
  assert.deepEqual(command, { type: 'message', channel: 'C1', text: 'hi', client_msg_id: 'cm-1' });
  assert.deepEqual(S.pendingIn(state, 'C1').map((p) => p.status), ['sending']);

  // Someone else's message takes seq 4 meanwhile; ours is 5.
  S.receiveMessage(state, msg('C1', 4));
  const stored = msg('C1', 5, { user: SELF.id, text: 'hi', client_msg_id: 'cm-1' });
  const acked = S.ackSend(state, 'cm-1', stored);
  assert.equal(acked.isNew, true);
  assert.equal(state.pending.size, 0);
  assert.deepEqual(seqs(state, 'C1'), [4, 5]);
  // The broadcast copy of the same message is a duplicate.
  assert.equal(S.receiveMessage(state, { ...stored }).isNew, false);
  assert.deepEqual(seqs(state, 'C1'), [4, 5]);
});

test('the message event may beat the ack: it settles the pending send, the ack is then a duplicate', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.addPending(state, { channel: 'C1', text: 'yo', client_msg_id: 'cm-2', now: 0 });
  S.startSend(state, 'cm-2');
  const stored = msg('C1', 1, { user: SELF.id, text: 'yo', client_msg_id: 'cm-2' });
  S.receiveMessage(state, stored);
  assert.equal(state.pending.size, 0);
  assert.equal(S.ackSend(state, 'cm-2', stored).isNew, false);
  assert.deepEqual(seqs(state, 'C1'), [1]);
});

test('a retry after a failure sends the same client_msg_id, and yields one message', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.addPending(state, { channel: 'C1', text: 'again', client_msg_id: 'cm-3', now: 0 });
  const first = S.startSend(state, 'cm-3');
  S.failSend(state, 'cm-3', 'Not sent: the server did not answer.');
  const failed = state.pending.get('cm-3');
  assert.equal(failed?.status, 'failed');
  assert.equal(failed?.error, 'Not sent: the server did not answer.');

  const retry = S.retrySend(state, 'cm-3');
  assert.deepEqual(retry, first, 'the very same command');
  assert.equal(state.pending.get('cm-3')?.attempts, 2);
  assert.equal(state.pending.get('cm-3')?.status, 'sending');
  assert.equal(state.pending.get('cm-3')?.error, undefined);

  // The first attempt was stored after all (its ack was lost): the server answers the
  // retry with the same message, so there is still one copy.
  const stored = msg('C1', 1, { user: SELF.id, text: 'again', client_msg_id: 'cm-3' });
  S.receiveMessage(state, stored);
  S.ackSend(state, 'cm-3', stored);
  assert.deepEqual(seqs(state, 'C1'), [1]);
  assert.equal(S.startSend(state, 'cm-3'), null, 'nothing left to send');
});

test('sends in flight when the connection drops wait for the next one, oldest first', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.addPending(state, { channel: 'C1', text: 'a', client_msg_id: 'a', now: 1 });
  S.addPending(state, { channel: 'C1', text: 'b', client_msg_id: 'b', now: 2 });
  S.addPending(state, { channel: 'C1', text: 'c', client_msg_id: 'c', now: 3 });
  S.startSend(state, 'a');
  S.startSend(state, 'b');
  S.failSend(state, 'c', 'refused');
  S.requeueInFlight(state);
  assert.deepEqual(S.queuedSends(state).map((p) => p.client_msg_id), ['a', 'b']);
  assert.equal(state.pending.get('c')?.status, 'failed', 'a refused send waits for Retry');
  S.discardSend(state, 'c');
  assert.equal(state.pending.has('c'), false);
});

test('unread counts follow new messages and the read marker', () => {
  const state = booted([{ id: 'C1', last_seq: 5, last_read: 3 }]);
  const ch = chan(state, 'C1');
  assert.equal(S.unreadCount(ch), 2);
  S.receiveMessage(state, msg('C1', 6));
  assert.equal(S.unreadCount(ch), 3);
  S.receiveMessage(state, msg('C1', 6));
  assert.equal(S.unreadCount(ch), 3, 'a duplicate is not unread twice');

  assert.equal(S.markTarget(state, 'C1'), 6);
  S.markRead(state, 'C1', 6);
  assert.equal(S.unreadCount(ch), 0);
  assert.equal(S.markTarget(state, 'C1'), null, 'nothing more to mark');

  // channel_marked from another tab never moves the marker back.
  S.markRead(state, 'C1', 2);
  assert.equal(ch.lastRead, 6);

  // Writing a message means having read up to it.
  S.receiveMessage(state, msg('C1', 7, { user: SELF.id }));
  assert.equal(S.unreadCount(ch), 0);
  // But not when unread messages of others come before it.
  S.receiveMessage(state, msg('C1', 8));
  S.receiveMessage(state, msg('C1', 9, { user: SELF.id }));
  assert.equal(S.unreadCount(ch), 2);
});

test('leaving a channel forgets it and its pending sends', () => {
  const state = booted([{ id: 'C1', last_seq: 1 }]);
  S.addPending(state, { channel: 'C1', text: 'x', client_msg_id: 'x', now: 0 });
  S.removeChannel(state, 'C1');
  assert.equal(state.channels.has('C1'), false);
  assert.equal(state.pending.size, 0);
  assert.deepEqual(S.resumeCursors(state), {});
});

test('edits and deletions change the stored message in place', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.receiveMessage(state, msg('C1', 1));
  S.receiveMessage(state, msg('C1', 2));
  assert.equal(S.changeMessage(state, msg('C1', 2, { text: 'fixed', edited_ts: '1.2' })), true);
  assert.equal(S.deleteMessage(state, 'C1', 1), true);
  const ch = chan(state, 'C1');
  assert.deepEqual(ch.messages.map((m) => [m.seq, m.text, Boolean(m.deleted)]), [
    [1, '', true],
    [2, 'fixed', false],
  ]);
  assert.equal(S.changeMessage(state, msg('C1', 9)), false, 'not loaded: nothing to change');
});

test('typing shows for a while, ends with the message, and is sent at most every 3 s', () => {
  const state = booted([{ id: 'C1', last_seq: 0 }]);
  S.typingStarted(state, 'C1', 'U2', 1000);
  assert.deepEqual(S.typingUsers(state, 'C1', 1000 + S.TYPING_SHOW_MS - 1), ['U2']);
  assert.deepEqual(S.typingUsers(state, 'C1', 1000 + S.TYPING_SHOW_MS), []);
  S.typingStarted(state, 'C1', 'U2', 2000);
  S.receiveMessage(state, msg('C1', 1));
  assert.deepEqual(S.typingUsers(state, 'C1', 2001), [], 'a message from the typist ends it');

  assert.equal(S.shouldSendTyping(null, 0), true);
  assert.equal(S.shouldSendTyping(10_000, 12_999), false);
  assert.equal(S.shouldSendTyping(10_000, 13_000), true);
  assert.equal(S.typingText(['Bob']), 'Bob is typing…');
  assert.equal(S.typingText(['Bob', 'Eve']), 'Bob and Eve are typing…');
  assert.equal(S.typingText(['a', 'b', 'c']), 'Several people are typing…');
  assert.equal(S.typingText([]), '');
});

test('presence and users: updates apply, missing users are requested once', () => {
  const state = booted([]);
  S.applyPresence(state, [{ id: 'U2', presence: 'active' }]);
  S.applyPresence(state, [{ id: 'U2', presence: 'dnd' }, { id: 'U3', presence: 'away' }]);
  assert.equal(state.presence.get('U2'), 'dnd');
  assert.equal(state.presence.get('U3'), 'away');

  assert.deepEqual(S.takeMissingUsers(state, ['U1', 'U2', 'U3', 'U4', 'U3']), ['U3', 'U4']);
  assert.deepEqual(S.takeMissingUsers(state, ['U3', 'U4']), [], 'already asked for');
  S.usersFailed(state, ['U4']);
  assert.deepEqual(S.takeMissingUsers(state, ['U3', 'U4']), ['U4']);
  S.upsertUsers(state, [{ id: 'U3', name: 'Cy', email: 'cy@acme.test' }]);
  assert.equal(state.users.get('U3')?.name, 'Cy');
});

test('display helpers: ts, initials, DM titles', () => {
  assert.equal(S.tsToMillis('1700000000.123456'), 1_700_000_000_123);
  assert.equal(S.tsToMillis('1700000000'), 1_700_000_000_000);
  assert.equal(S.tsToMillis('1700000000.5'), 1_700_000_000_500);
  assert.equal(S.initials('Ada Lovelace'), 'AL');
  assert.equal(S.initials('bob'), 'BO');
  assert.equal(S.initials(''), '?');

  const state = booted([
    { id: 'D1', last_seq: 0, kind: 'dm', members: ['U1', 'U2'] },
    { id: 'D2', last_seq: 0, kind: 'dm', members: ['U1'] },
  ]);
  assert.equal(S.channelTitle(state, chan(state, 'D1')), 'Bob');
  assert.equal(S.channelTitle(state, chan(state, 'D2')), 'Ada Lovelace (you)');
});
