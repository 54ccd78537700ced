//! Desktop notifications (org.freedesktop.Notifications, through notify-rust): a
//! critical "SSH Sign Request" for every request, with Approve / Deny actions where the
//! notification server offers actions. An action decides through the same digest-bound
//! path as the CLI; a notification is withdrawn when its request leaves the queue.

use crate::decide;
use crate::queue::PendingInfo;
use crate::signer::Signer;
use notify_rust::{Notification, Timeout, Urgency};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use vmux_proto::desktop::session_bus_available;

/// The notification's title and body for `p`: the body is the whole display (every
/// field an Approve binds), as every other surface shows it.
pub fn text(p: &PendingInfo) -> (String, String) {
    let title = match p.kind.as_str() {
        "pair" => "Pairing Request",
        "cert" => "SSH Certificate Request",
        _ => "SSH Sign Request",
    };
    let body = match p.kind.as_str() {
        "pair" => format!(
            "From a device calling itself {}: compare the code, then type it on the signer to pair",
            p.from
        ),
        _ => crate::describe::describe(p),
    };
    (title.into(), body)
}

/// Notify about every request as it arrives, until the signer stops.
pub async fn run(signer: Arc<Signer>) {
    let mut notified: HashSet<String> = HashSet::new();
    loop {
        let pending = signer.queue.pending();
        for p in &pending {
            // A pairing raises at most one notification a minute (strangers can start
            // pairings; the queue and the sheet show them all).
            if notified.insert(p.id.clone())
                && (p.kind != "pair" || (p.code.is_some() && signer.gate.may_notify_pairing()))
            {
                tokio::spawn(notify_one(signer.clone(), p.clone()));
            }
        }
        notified.retain(|id| pending.iter().any(|p| &p.id == id));
        signer.queue.changed(Duration::from_secs(5)).await;
    }
}

async fn notify_one(signer: Arc<Signer>, p: PendingInfo) {
    // A button pressed within a second of the notification appearing decides nothing:
    // the notification is shown again.
    while let Some(shown_at) = notify_once(&signer, &p).await {
        if shown_at.elapsed() >= decide::SETTLE {
            return;
        }
    }
}

/// Show `p` once; `Some(when it was shown)` when a button was pressed too soon.
async fn notify_once(signer: &Arc<Signer>, p: &PendingInfo) -> Option<std::time::Instant> {
    let (title, body) = text(p);
    let mut n = Notification::new();
    n.appname("vmux")
        .summary(&title)
        .body(&vmux_proto::text::markup_escape(&body))
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
            return None;
        }
    };
    let shown_at = std::time::Instant::now();
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
            if a.is_some() && shown_at.elapsed() < decide::SETTLE {
                tracing::info!("request {}: a notification button pressed within a second of showing; shown again", p.id);
                return Some(shown_at);
            }
            // The digest of exactly what the notification showed.
            let shown = p.compute_digest();
            let r = match a.as_deref() {
                Some("approve") if approvable => decide::approve(signer, &p.id, &shown, None).await,
                Some("deny") => decide::deny(signer, &p.id, &shown),
                // Dismissed or closed: nothing is decided.
                _ => return None,
            };
            match r {
                Ok(_) => tracing::info!(
                    "request {}: {} from a desktop notification",
                    p.id,
                    if a.as_deref() == Some("approve") { "approved" } else { "denied" }
                ),
                Err(e) => tracing::info!("notification action for {}: {e}", p.id),
            }
        }
        _ = left_queue(signer, &p.id) => {
            handle.close_async().await;
        }
    }
    None
}

/// Resolves once `id` is no longer pending.
async fn left_queue(signer: &Signer, id: &str) {
    while signer.queue.pending().iter().any(|p| p.id == id) {
        signer.queue.changed(Duration::from_secs(1)).await;
    }
}
