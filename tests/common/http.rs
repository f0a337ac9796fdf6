//! HTTP over loopback: one request helper every HTTP call of the tests goes through, its GET and
//! POST shorthands, and the history pager.

use serde_json::Value as JsonValue;
use serde_json::Value;

/// An HTTP answer: status, response headers (lower-case names), body text.
pub type HttpAnswer = (u16, std::collections::BTreeMap<String, String>, String);

/// Any HTTP request on loopback (`GET`, or else a JSON `POST`); `Err` when it got no answer
/// (e.g. nothing listens yet). Every HTTP helper of the tests goes through here.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<HttpAnswer, ureq::Error> {
    fn with_headers<B>(
        mut r: ureq::RequestBuilder<B>,
        headers: &[(String, String)],
    ) -> ureq::RequestBuilder<B> {
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    }
    let (method, url) = (method.to_owned(), url.to_owned());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = body.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut resp = if method == "GET" {
            with_headers(agent.get(&url), &headers).call()
        } else {
            let r = agent.post(&url).header("content-type", "application/json");
            with_headers(r, &headers).send(body.unwrap_or_default().as_bytes())
        }?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Ok((status, headers, text))
    })
    .await
    .unwrap()
}

/// GET over HTTP on loopback: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let (status, _, body) = http_request("GET", url, &[], None).await.expect("http get");
    (status, body)
}

/// POST JSON over HTTP on loopback: (status, body).
pub async fn http_post(url: &str, body: &str) -> (u16, String) {
    http_post_with(url, body, &[]).await
}

/// POSTs JSON with extra headers.
pub async fn http_post_with(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http_request("POST", url, headers, Some(body))
        .await
        .expect("http post");
    (status, body)
}

/// Pages through a durable topic's history API: `(offset, payload)` in order.
pub async fn full_history(server_http: &str, topic: &str) -> Vec<(u64, JsonValue)> {
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let (status, body) = http_get(&format!(
            "{server_http}/api/channels/{topic}/history?since_offset={since}&limit=1000"
        ))
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let page = v["messages"].as_array().unwrap();
        if page.is_empty() {
            return out;
        }
        for m in page {
            since = m["offset"].as_u64().unwrap();
            out.push((since, m["payload"].clone()));
        }
    }
}
