//! A pending request in words, for every surface that shows one: the multi-line
//! description (line prompt, askpass, CLI) and the one-line summary (`pending`).
//! What the signer verified and what a device merely claims are on separate,
//! labelled lines; every id says what it is the id of.

use crate::queue::PendingInfo;
use vmux_proto::time::duration;

/// A multi-line description of a pending request for a person.
pub fn describe(p: &PendingInfo) -> String {
    let origin = p.origin.as_deref().unwrap_or("agent");
    let mut s = match p.kind.as_str() {
        "pair" if p.signer_code.is_some() => format!(
            "PAIRING with a device calling itself {} (device id {}): its code matched\n  this signer's code: {}  (type it on that device to finish the pairing)",
            p.from,
            p.from_id,
            p.signer_code.as_deref().unwrap_or("?")
        ),
        "pair" => format!(
            "PAIRING request from a device calling itself {} (device id {})\n  code: {}  (approve only if the other device shows this same code)",
            p.from,
            p.from_id,
            p.code.as_deref().unwrap_or("?")
        ),
        "cert" => format!(
            "SESSION CERTIFICATE request from {} (device id {})\n  grants:      {}\n  principals:  {}\n  validity:    {}",
            p.from,
            p.from_id,
            p.grants.as_deref().unwrap_or("?"),
            p.principals.as_deref().unwrap_or_default().join(","),
            duration(p.validity_secs.unwrap_or(0)),
        ),
        _ => format!(
            "SIGNATURE request from {} (device id {}, {origin})",
            p.from, p.from_id
        ),
    };
    if let Some(w) = &p.warning {
        s += &format!("\n  WARNING:     {w}");
    }
    if let Some(purpose) = &p.purpose {
        if p.kind == "sign" {
            s += &format!("\n  purpose:     {purpose}  (parsed by this signer)");
        }
    }
    if let Some(u) = &p.user {
        s += &format!("\n  user:        {u}  (parsed by this signer)");
    }
    if let Some(d) = &p.destination {
        s += &format!("\n  destination: {d}");
    }
    if let Some(r) = &p.requester {
        s += &format!("\n  requester:   {r}  (claimed by the device)");
    }
    if let Some(v) = &p.verify {
        s += &format!("\n  verify:      {v} (asked after you approve)");
    }
    if let Some(k) = &p.key {
        s += &format!(
            "\n  key:         {k} {}{}",
            p.key_comment.as_deref().unwrap_or(""),
            p.key_store
                .as_deref()
                .map(|st| format!(" [{st}]"))
                .unwrap_or_default()
        );
    }
    s += &format!("\n  request id:  {} (this signer's)", p.id);
    s
}

/// One line for a terminal: what, from where, with which key, how old.
pub fn summary(p: &PendingInfo) -> String {
    let age = vmux_proto::now_unix().saturating_sub(p.created);
    let mut s = format!("{}  {:<4}  from {} ({})", p.id, p.kind, p.from, p.from_id);
    if let Some(c) = &p.code {
        s += &format!("  code {c}");
    }
    if let Some(c) = &p.signer_code {
        s += &format!("  signer's code {c} (type it on that device)");
    }
    if let Some(pu) = &p.purpose {
        s += &format!("  {pu}");
    }
    if let Some(d) = &p.destination {
        s += &format!(" → {d}");
    }
    if let Some(k) = &p.key {
        s += &format!("  key {k}");
        if let Some(c) = p.key_comment.as_deref().filter(|c| !c.is_empty()) {
            s += &format!(" ({c})");
        }
    }
    if let Some(r) = &p.requester {
        s += &format!("  requester (claimed) {r}");
    }
    if let Some(v) = p.validity_secs {
        s += &format!("  validity {}", duration(v));
    }
    if let Some(w) = &p.warning {
        s += &format!("  WARNING: {w}");
    }
    s + &format!("  {age}s ago")
}

/// One line of a list decided as one (`n`: its place on the list, from 1): kind,
/// device, purpose, destination, requester and key, nothing left out.
pub fn list_line(n: usize, p: &PendingInfo) -> String {
    let mut s = format!("{n:>2}. {}  from {}", p.kind, p.from);
    s += &format!("  {}", p.purpose.as_deref().unwrap_or("purpose unknown"));
    if let Some(d) = &p.destination {
        s += &format!(" → {d}");
    }
    s += &format!(
        "  requester (claimed) {}",
        p.requester.as_deref().unwrap_or("not named")
    );
    if let Some(k) = &p.key {
        s += &format!("  key {k}");
    }
    if let Some(w) = &p.warning {
        s += &format!("  WARNING: {w}");
    }
    s
}
