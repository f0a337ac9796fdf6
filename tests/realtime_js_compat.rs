//! Compatibility with the official `@supabase/realtime-js` client, unchanged, under Node:
//! subscribe, broadcast with ack, binary broadcast, presence with an in-place update, REST
//! broadcast (`httpSend` and the `send()` fallback), on both protocol versions.
//!
//! And `@supabase/supabase-js` as apps use it: the project's anon key in `createClient`, the
//! signed-in user's token through `realtime.setAuth` or the `accessToken` option.
//!
//! Needs `node` and `tests/compat/node_modules` (the README's test command installs them).

mod common;

use common::auth_kit::{now_s, token, token_with, SECRET};
use common::compat::run_node;
use common::TestServer;
use serde_json::json;

fn run_client(server: &TestServer, vsn: &str) {
    run_node(
        "realtime_js.cjs",
        &[format!("http://{}", server.addr), vsn.to_owned()],
    );
}

/// F23: supabase-js, unchanged, as an app uses it against a production-like server (a JWT
/// secret, anonymous connections refused): the anon key (no `sub`) connects and reaches public
/// topics; the user's token from `setAuth` or `accessToken` opens their personal topic; REST
/// `httpSend` carries both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_works_with_the_anon_key_and_a_signed_in_user() {
    let server = TestServer::start_with(|c| {
        c.auth.jwt_secret = SECRET.into();
        c.auth.allow_anonymous = false;
    });
    let anon_key = token_with(json!({"iss": "supabase", "role": "anon", "exp": now_s() + 3_600}));
    let args = [
        format!("http://{}", server.addr),
        anon_key,
        token("user-42"),
        "user-42".to_owned(),
    ];
    tokio::task::spawn_blocking(move || run_node("supabase_js.cjs", &args))
        .await
        .unwrap();
}

/// realtime-js speaking vsn 2.0.0 (its default, with binary broadcast frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_js_works_unchanged_on_vsn_2() {
    let server = TestServer::start();
    tokio::task::spawn_blocking(move || run_client(&server, "2.0.0"))
        .await
        .unwrap();
}

/// realtime-js speaking vsn 1.0.0 (JSON objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_js_works_unchanged_on_vsn_1() {
    let server = TestServer::start();
    tokio::task::spawn_blocking(move || run_client(&server, "1.0.0"))
        .await
        .unwrap();
}
