//! Waking a signer that is not connected: a content-free POST to its wake URL (its
//! "device token"), compatible with ntfy and UnifiedPush endpoints. The body names only
//! the agent: no key, no data, no destination.

use std::time::Duration;

/// The POST body: `{"vmux":"wake","from":"<agent device name>"}`.
pub fn body(agent_name: &str) -> String {
    serde_json::json!({"vmux": "wake", "from": agent_name}).to_string()
}

/// POST the wake message; bounded to 5 s. Returns a one-line reason on failure.
pub async fn post(url: &str, agent_name: &str) -> Result<(), String> {
    let (url, body) = (url.to_string(), body(agent_name));
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
    #[test]
    fn body_names_only_the_agent() {
        let b: serde_json::Value = serde_json::from_str(&super::body("laptop")).unwrap();
        assert_eq!(b, serde_json::json!({"vmux": "wake", "from": "laptop"}));
    }
}
