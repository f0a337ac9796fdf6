// Drives a running Locus with the official @supabase/realtime-js client, unchanged.
// Usage: node realtime_js.cjs <http://host:port> <vsn> [<http://other-node>]
// With a second node, client B and the REST-only client talk to it (a cluster: every check
// then crosses nodes).
// Exits 0 when every check passed; otherwise prints the failed check and exits 1.
'use strict';
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const { TIMEOUT_MS, waitFor, check } = require('./wait.cjs');

const [base, vsn] = [process.argv[2], process.argv[3] || '2.0.0'];
const otherBase = process.argv[4] || base;

function client(at = base) {
  const endpoint = at.replace(/^http/, 'ws') + '/realtime/v1';
  return new RealtimeClient(endpoint, { transport: WebSocket, vsn, params: { apikey: 'anon-key' }, timeout: TIMEOUT_MS });
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status !== 'CLOSED') reject(new Error(`subscribe: ${status} ${err || ''}`));
    });
  });
}

async function main() {
  const a = client();
  const b = client(otherBase);
  const topic = `compat-${vsn}-${process.pid}`;
  const chA = a.channel(topic, { config: { broadcast: { self: false, ack: true }, presence: { key: 'user-a' } } });
  const chB = b.channel(topic, { config: { presence: { key: 'user-b' } } });

  const seenByB = [];
  const seenByA = [];
  let leaves = 0;
  chB.on('broadcast', { event: '*' }, (m) => seenByB.push(m));
  chB.on('presence', { event: 'sync' }, () => {});
  chB.on('presence', { event: 'leave' }, () => { leaves += 1; });
  chA.on('broadcast', { event: '*' }, (m) => seenByA.push(m));
  await subscribe(chA);
  await subscribe(chB);

  // Broadcast with ack over the socket.
  const status = await chA.send({ type: 'broadcast', event: 'greet', payload: { hello: 'world' } });
  check(status === 'ok', `ack status ${status}`);
  const greet = await waitFor('greet at B', () => seenByB.find((m) => m.event === 'greet'));
  check(JSON.stringify(greet.payload) === '{"hello":"world"}', `greet payload ${JSON.stringify(greet)}`);
  check(!seenByA.some((m) => m.event === 'greet'), 'self:false sender received its own broadcast');

  // Binary payload (vsn 2.0.0 only: the JSON protocol cannot carry bytes).
  if (vsn === '2.0.0') {
    const bytes = new Uint8Array([1, 2, 3, 250]).buffer;
    check((await chA.send({ type: 'broadcast', event: 'bin', payload: bytes })) === 'ok', 'binary ack');
    const bin = await waitFor('binary at B', () => seenByB.find((m) => m.event === 'bin'));
    const got = Array.from(new Uint8Array(bin.payload));
    check(JSON.stringify(got) === '[1,2,3,250]', `binary payload ${JSON.stringify(got)}`);
  }

  // Presence: track, then update in place — exactly one meta for user-a, no leave.
  check((await chA.track({ status: 'online' })) === 'ok', 'track reply');
  await waitFor('user-a online at B', () => (chB.presenceState()['user-a'] || []).some((p) => p.status === 'online'));
  check((await chA.track({ status: 'idle' })) === 'ok', 'retrack reply');
  await waitFor('user-a idle at B', () => (chB.presenceState()['user-a'] || []).some((p) => p.status === 'idle'));
  const metas = chB.presenceState()['user-a'];
  check(metas.length === 1, `expected one meta after the update, got ${JSON.stringify(metas)}`);
  check(leaves === 0, 'an in-place update produced a leave');

  // Typing (a Locus extension) through realtime-js's generic send() and on().
  const typingAtB = [];
  chB.on('typing', {}, (p) => typingAtB.push(p));
  check((await chA.send({ type: 'typing', payload: { typing: true } })) === 'ok', 'typing reply');
  await waitFor('typing at B', () => typingAtB.find((p) => p.typing === true && p.user_id));

  // REST: httpSend, and send() falling back to REST from a channel that is not joined.
  const sent = await chB.httpSend('rest-event', { via: 'httpSend' });
  check(sent.success === true, `httpSend ${JSON.stringify(sent)}`);
  await waitFor('httpSend at A', () => seenByA.find((m) => m.event === 'rest-event' && m.payload.via === 'httpSend'));
  const restOnly = client(otherBase);
  const fallbackStatus = await restOnly.channel(topic).send({ type: 'broadcast', event: 'fallback', payload: { via: 'rest' } });
  check(fallbackStatus === 'ok', `REST fallback status ${fallbackStatus}`);
  await waitFor('REST fallback at A', () => seenByA.find((m) => m.event === 'fallback'));

  // Leaving is clean.
  check((await chB.unsubscribe()) === 'ok', 'unsubscribe');
  await Promise.all([a.disconnect(), b.disconnect(), restOnly.disconnect()]);
  console.log(JSON.stringify({ ok: true, vsn }));
}

main().then(() => process.exit(0), (e) => { console.error(`realtime-js compat (${vsn}): ${e.message}`); process.exit(1); });
