//! Desktop notifications on the workstation (org.freedesktop.Notifications through
//! notify-rust): "Waiting for approval on alice-pi", replaced by the outcome. They only
//! inform: a workstation notification never decides anything.

use notify_rust::{Notification, Timeout, Urgency};
use std::sync::Arc;

/// A notification that is being shown (or failed to be).
pub type Handle = Arc<tokio::sync::Mutex<Option<notify_rust::NotificationHandle>>>;

fn base(summary: &str, body: &str) -> Notification {
    let mut n = Notification::new();
    n.appname("vmux agent")
        .summary(summary)
        .body(&vmux_proto::text::markup_escape(body))
        .urgency(Urgency::Normal);
    n
}

/// Show "Waiting for approval on SIGNER" (in the background).
pub fn waiting(signer: &str, what: &str) -> Option<Handle> {
    let handle: Handle = Default::default();
    let mut n = base(&format!("Waiting for approval on {signer}"), what);
    n.timeout(Timeout::Never);
    let mut slot = handle.clone().try_lock_owned().ok()?;
    let fut = async move {
        match n.show_async().await {
            Ok(shown) => *slot = Some(shown),
            Err(e) => tracing::debug!("workstation notification: {e}"),
        }
    };
    // The guard moves into the task: `outcome` waits for it to be shown first.
    tokio::spawn(fut);
    Some(handle)
}

/// Replace the waiting notification with how it ended.
pub fn outcome(h: Handle, approved: bool, signer: &str, reason: &str) {
    let summary = if approved {
        format!("Approved on {signer}")
    } else {
        "vmux: request not signed".to_string()
    };
    let mut n = base(&summary, reason);
    n.timeout(Timeout::Milliseconds(8000));
    tokio::spawn(async move {
        let shown = h.lock().await.take();
        if let Some(s) = &shown {
            n.id(s.id());
        }
        if let Err(e) = n.show_async().await {
            tracing::debug!("workstation notification: {e}");
        }
    });
}

/// Take the waiting notification away (the request was cancelled).
pub fn close(h: Handle) {
    tokio::spawn(async move {
        if let Some(s) = h.lock().await.take() {
            s.close_async().await;
        }
    });
}
