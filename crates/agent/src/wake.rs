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

/// Whether `url` may be posted to: https, or http to a loopback address. A signer sends
/// its wake URL, so one that points at this machine or its local link (loopback,
/// link-local, `localhost`: services that trust local callers) is refused unless
/// `allow_local` (`wake_local = true` in the agent's config) says it is meant.
pub fn url_allowed(url: &str, allow_local: bool) -> Result<(), String> {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(format!("wake URL {url:?}: only https:// URLs are used")),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let ip = host.parse::<std::net::IpAddr>().ok();
    let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback());
    let link_local = ip.is_some_and(|ip| match ip {
        std::net::IpAddr::V4(a) => a.is_link_local() || a.is_unspecified(),
        std::net::IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80 || a.is_unspecified(),
    });
    if (loopback || link_local) && !allow_local {
        return Err(format!(
            "wake URL {url:?} points at this machine or its local link; set `wake_local = true` in the agent's config.toml if that is meant"
        ));
    }
    if https || loopback {
        Ok(())
    } else {
        Err(format!(
            "wake URL {url:?}: plain http is used only to this machine (loopback); use https://"
        ))
    }
}

/// POST the wake message; bounded to 5 s. Returns a one-line reason on failure.
pub async fn post(url: &str, token: &str, allow_local: bool) -> Result<(), String> {
    url_allowed(url, allow_local)?;
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
        assert!(url_allowed("https://ntfy.sh/topic", false).is_ok());
        assert!(url_allowed("http://127.0.0.1:8080/wake", true).is_ok());
        assert!(url_allowed("http://127.0.0.1:8080/wake", false).is_err());
        assert!(url_allowed("https://localhost/x", false).is_err());
        assert!(url_allowed("https://169.254.169.254/latest", false).is_err());
        assert!(url_allowed("https://[fe80::1]/x", false).is_err());
        assert!(url_allowed("http://[::1]:80/x", true).is_ok());
        assert!(url_allowed("http://localhost/x", true).is_ok());
        assert!(url_allowed("http://ntfy.sh/topic", true).is_err());
        assert!(url_allowed("http://127.0.0.1.evil.com/x", true).is_err());
        assert!(url_allowed("ftp://x", true).is_err());
    }
}
