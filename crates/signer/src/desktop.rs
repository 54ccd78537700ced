//! Desktop notifications (org.freedesktop.Notifications, through notify-rust): a
//! critical "SSH Sign Request" for every request, with Approve / Deny actions where the
//! notification server offers actions. An action decides through the same digest-bound
//! path as the CLI; a notification is withdrawn when its request leaves the queue.

use crate::queue::{Decision, PendingInfo};
use crate::Signer;
use notify_rust::{Notification, Timeout, Urgency};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether a desktop session bus is there to notify on.
pub fn session_bus_available() -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| std::path::Path::new(&d).join("bus").exists())
        .unwrap_or(false)
}

/// The notification's title and body for `p`.
pub fn text(p: &PendingInfo) -> (String, String) {
    let to = p
        .destination
        .clone()
        .or_else(|| p.purpose.clone())
        .unwrap_or_default();
    match p.kind.as_str() {
        "pair" => (
            "Pairing Request".into(),
            format!(
                "From {}: compare the code, then type it on the signer to pair",
                p.from
            ),
        ),
        "cert" => (
            "SSH Certificate Request".into(),
            format!("From {} → {}", p.from, p.grants.as_deref().unwrap_or("")),
        ),
        _ => (
            "SSH Sign Request".into(),
            format!(
                "From {} → {to}{}",
                p.from,
                p.warning
                    .as_deref()
                    .map(|w| format!("\nWARNING: {w}"))
                    .unwrap_or_default()
            ),
        ),
    }
}

/// Notify about every request as it arrives, until the signer stops.
pub async fn run(signer: Arc<Signer>) {
    let mut notified: HashSet<String> = HashSet::new();
    loop {
        let pending = signer.queue.pending();
        for p in &pending {
            if notified.insert(p.id.clone()) {
                tokio::spawn(notify_one(signer.clone(), p.clone()));
            }
        }
        notified.retain(|id| pending.iter().any(|p| &p.id == id));
        signer.queue.changed(Duration::from_secs(5)).await;
    }
}

async fn notify_one(signer: Arc<Signer>, p: PendingInfo) {
    let (title, body) = text(&p);
    let mut n = Notification::new();
    n.appname("vmux")
        .summary(&title)
        .body(&body)
        .urgency(Urgency::Critical)
        .timeout(Timeout::Never);
    // A pairing is approved only by typing its code on the signer, and a request that
    // needs user verification only where the password can be typed: no Approve button.
    let approvable = p.kind != "pair" && p.verify.is_none();
    if approvable {
        n.action("approve", "Approve");
    }
    n.action("deny", "Deny");
    let handle = match n.show_async().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("desktop notification failed: {e}");
            return;
        }
    };
    let action = Arc::new(Mutex::new(None::<String>));
    let seen = action.clone();
    let waiting = handle.wait_for_action_async(move |r: &notify_rust::NotificationResponse| {
        if let notify_rust::NotificationResponse::Action(a) = r {
            *seen.lock().unwrap() = Some(a.clone());
        }
    });
    tokio::select! {
        _ = waiting => {
            let a = action.lock().unwrap().clone();
            let d = match a.as_deref() {
                Some("approve") if approvable => Decision::Approve,
                Some("deny") => Decision::Deny,
                // Dismissed or closed: nothing is decided.
                _ => return,
            };
            match signer.queue.decide(&p.id, &p.digest, d) {
                Ok((_, delivered)) => {
                    let word = if d == Decision::Approve { "approved" } else { "denied" };
                    tracing::info!("request {}: {word} from a desktop notification", p.id);
                    if !delivered {
                        signer.delivery_failed(&p.id, &p.from_id);
                    }
                }
                Err(e) => tracing::info!("notification action for {}: {e}", p.id),
            }
        }
        _ = left_queue(&signer, &p.id) => {
            handle.close_async().await;
        }
    }
}

/// Resolves once `id` is no longer pending.
async fn left_queue(signer: &Signer, id: &str) {
    while signer.queue.pending().iter().any(|p| p.id == id) {
        signer.queue.changed(Duration::from_secs(1)).await;
    }
}
