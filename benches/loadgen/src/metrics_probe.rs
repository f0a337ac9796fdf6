//! Reads the server's own figures (RSS, connections) from its Prometheus endpoint.

/// The value of the first sample of `series` in a Prometheus text body.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Fetches `<http base>/metrics`; `None` when the server does not expose it.
pub fn fetch(ws_url: &str) -> Option<String> {
    let base = ws_url.replacen("ws://", "http://", 1);
    let origin_end = base["http://".len()..]
        .find('/')
        .map_or(base.len(), |i| i + "http://".len());
    let url = format!("{}/metrics", &base[..origin_end]);
    let mut resp = ureq::get(&url).call().ok()?;
    resp.body_mut().read_to_string().ok()
}
