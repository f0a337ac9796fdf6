// Drives a running Locus with the official @supabase/supabase-js client, unchanged, the way an
// app uses it: the project's anon key in createClient (it goes in the socket URL and the REST
// headers), the signed-in user's token through realtime.setAuth or the accessToken option.
// Usage: node supabase_js.cjs <http://host:port> <anon key> <user token> <user id>
// Exits 0 when every check passed; otherwise prints the failed check and exits 1.
'use strict';
const { createClient } = require('@supabase/supabase-js');
const WebSocket = require('ws');
const { TIMEOUT_MS, waitFor, check } = require('./wait.cjs');

const [base, anonKey, userToken, userId] = process.argv.slice(2);

function options(extra) {
  return {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: WebSocket, timeout: TIMEOUT_MS },
    ...extra,
  };
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve('SUBSCRIBED');
      else if (status !== 'CLOSED') resolve(`${status} ${err ? err.message : ''}`.trim());
    });
    setTimeout(() => reject(new Error(`subscribe to ${channel.topic} timed out`)), TIMEOUT_MS);
  });
}

async function main() {
  // Signed in through supabase-auth: the app hands the user's token to realtime.
  const app = createClient(base, anonKey, options());
  await app.realtime.setAuth(userToken);
  const personal = app.channel(`user:${userId}`);
  const hellos = [];
  personal.on('broadcast', { event: 'hello' }, (m) => hellos.push(m.payload));
  check((await subscribe(personal)) === 'SUBSCRIBED', 'the signed-in user cannot join their personal topic');

  // Third-party auth: the accessToken option.
  const third = createClient(base, anonKey, options({ accessToken: async () => userToken }));
  const lobbyTopic = `lobby-${process.pid}`;
  const lobby = third.channel(lobbyTopic);
  const chats = [];
  lobby.on('broadcast', { event: 'chat' }, (m) => chats.push(m.payload));
  check((await subscribe(lobby)) === 'SUBSCRIBED', 'the accessToken client cannot join a public topic');

  // Only the anon key: public topics yes, someone's personal topic no.
  const visitor = createClient(base, anonKey, options());
  const visitorLobby = visitor.channel(lobbyTopic);
  check((await subscribe(visitorLobby)) === 'SUBSCRIBED', 'the anon key cannot join a public topic');
  const stolen = await subscribe(visitor.channel(`user:${userId}`));
  check(stolen !== 'SUBSCRIBED', 'the anon key joined a personal topic');

  const sent = await visitorLobby.send({ type: 'broadcast', event: 'chat', payload: { text: 'hi' } });
  check(sent === 'ok', `broadcast with the anon key: ${sent}`);
  await waitFor('the chat', () => chats.length === 1);

  // REST broadcast (httpSend) with the user's token: reaches the personal topic.
  const rest = third.channel(`user:${userId}`);
  const result = await rest.httpSend('hello', { n: 1 });
  check(result && result.success !== false, `httpSend: ${JSON.stringify(result)}`);
  await waitFor('the REST hello', () => hellos.length === 1);
  check(hellos[0].n === 1, `hello payload ${JSON.stringify(hellos[0])}`);

  for (const c of [app, third, visitor]) await c.removeAllChannels();
  console.log(JSON.stringify({ ok: true }));
}

main().then(() => process.exit(0), (e) => { console.error(`supabase-js compat: ${e.message}`); process.exit(1); });
