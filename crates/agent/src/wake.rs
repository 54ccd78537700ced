//! Waking a signer that is not connected: a content-free POST to its wake URL (its
//! "device token"), compatible with ntfy and UnifiedPush endpoints. The body carries
//! only a random token made for this pairing (so the wake service can tell requests
//! apart without learning who sends them): no host name, no key, no data, no
//! destination. Only https is used, except to a loopback address.

use std::time::Duration;

/// The POST body: `{"vmux":"wake","token":"<random per-pairing token>"}`.
pub fn body(token: &str) -> String {
    serde_json::json!({"vmux": "wake", "token": token}).to_string()
}

/// A fresh per-pairing wake token (128 random bits, hex).
pub fn new_token() -> String {
    vmux_proto::identity::hex(&vmux_proto::random_bytes::<16>())
}

/// Whether `url` may be posted to: https, or http to a loopback address.
pub fn url_allowed(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("wake URL {url:?}: only https:// URLs are used"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "wake URL {url:?}: plain http is used only to this machine (loopback); use https://"
        ))
    }
}

/// POST the wake message; bounded to 5 s. Returns a one-line reason on failure.
pub async fn post(url: &str, token: &str) -> Result<(), String> {
    url_allowed(url)?;
    let (url, body) = (url.to_string(), body(token));
    let call = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map(|_| ())
            .map_err(|e| format!("wake POST to {url} failed: {e}"))
    });
    call.await.map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_only_a_token() {
        let b: serde_json::Value = serde_json::from_str(&body("abc")).unwrap();
        assert_eq!(b, serde_json::json!({"vmux": "wake", "token": "abc"}));
        assert_eq!(new_token().len(), 32);
    }

    #[test]
    fn https_only_except_loopback() {
        assert!(url_allowed("https://ntfy.sh/topic").is_ok());
        assert!(url_allowed("http://127.0.0.1:8080/wake").is_ok());
        assert!(url_allowed("http://[::1]:80/x").is_ok());
        assert!(url_allowed("http://localhost/x").is_ok());
        assert!(url_allowed("http://ntfy.sh/topic").is_err());
        assert!(url_allowed("http://127.0.0.1.evil.com/x").is_err());
        assert!(url_allowed("ftp://x").is_err());
    }
}
