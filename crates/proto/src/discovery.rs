//! Finding signers without addresses: a signer advertises `_vmuxsigner._tcp.local.`
//! (RFC 6763 DNS-SD over mDNS) with TXT `v=1`, `id=` (its device id) and `name=`; an
//! agent browses for the ids it is paired with. mDNS runs only where it is allowed:
//! `Scope::Loopback` keeps every packet on 127.0.0.0/8.

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const SERVICE: &str = "_vmuxsigner._tcp.local.";

/// Where discovery may send and listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every interface with multicast.
    All,
    /// 127.0.0.0/8 only.
    Loopback,
}

/// The `discovery` setting of either side: `auto`, `loopback` or `off`. `auto` follows
/// `listen` when given (a loopback listener advertises on loopback only), else all.
pub fn scope_for(setting: &str, listen: Option<IpAddr>) -> Result<Option<Scope>, String> {
    match setting {
        "off" => Ok(None),
        "loopback" => Ok(Some(Scope::Loopback)),
        "auto" if listen.is_some_and(|ip| ip.is_loopback()) => Ok(Some(Scope::Loopback)),
        "auto" | "all" => Ok(Some(Scope::All)),
        other => Err(format!("discovery = {other:?}: use auto, loopback or off")),
    }
}

/// A signer seen on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

fn daemon(scope: Scope) -> Result<ServiceDaemon, String> {
    let d = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
    if scope == Scope::Loopback {
        d.disable_interface(IfKind::All)
            .map_err(|e| format!("mDNS: {e}"))?;
        d.enable_interface(IfKind::LoopbackV4)
            .map_err(|e| format!("mDNS: {e}"))?;
    } else {
        d.disable_interface(IfKind::IPv6)
            .map_err(|e| format!("mDNS: {e}"))?;
    }
    Ok(d)
}

/// An advertisement; withdrawn when dropped.
pub struct Advert {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Drop for Advert {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// Advertise a signer listening on `listen`. An unspecified address advertises on every
/// interface in `scope`; a specific one advertises that address only.
pub fn advertise(scope: Scope, id: &str, name: &str, listen: SocketAddr) -> Result<Advert, String> {
    let d = daemon(scope)?;
    let props = [("v", "1"), ("id", id), ("name", name)];
    let host = format!("vmux-{id}.local.");
    let instance = format!("{name} ({id})");
    let info = if listen.ip().is_unspecified() {
        ServiceInfo::new(SERVICE, &instance, &host, "", listen.port(), &props[..])
            .map(|i| i.enable_addr_auto())
    } else {
        ServiceInfo::new(
            SERVICE,
            &instance,
            &host,
            listen.ip(),
            listen.port(),
            &props[..],
        )
    }
    .map_err(|e| format!("mDNS service record: {e}"))?;
    let fullname = info.get_fullname().to_string();
    d.register(info)
        .map_err(|e| format!("mDNS register: {e}"))?;
    Ok(Advert {
        daemon: d,
        fullname,
    })
}

/// How many resolved signers may wait to be looked at; more (a flood of spoofed
/// records) are dropped until the reader catches up.
pub const WATCH_QUEUE: usize = 64;

/// Browse; every signer resolved is sent on the returned channel until it is dropped.
pub fn watch(scope: Scope) -> Result<tokio::sync::mpsc::Receiver<Found>, String> {
    let d = daemon(scope)?;
    let events = d.browse(SERVICE).map_err(|e| format!("mDNS browse: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
    std::thread::spawn(move || {
        while let Ok(ev) = events.recv() {
            if let ServiceEvent::ServiceResolved(s) = ev {
                if s.get_property_val_str("v") != Some("1") {
                    continue;
                }
                let Some(id) = s.get_property_val_str("id") else {
                    continue;
                };
                let mut addrs: Vec<SocketAddr> = s
                    .get_addresses_v4()
                    .into_iter()
                    .map(|ip| SocketAddr::new(IpAddr::V4(ip), s.get_port()))
                    .collect();
                addrs.sort();
                let found = Found {
                    id: id.to_string(),
                    name: s.get_property_val_str("name").unwrap_or("").to_string(),
                    addrs,
                };
                match tx.try_send(found) {
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
        let _ = d.shutdown();
    });
    Ok(rx)
}

/// Everything resolved within `wait`, de-duplicated by id, each with how long it took
/// to appear. With `until`, returns as soon as that id is seen.
pub async fn browse(
    scope: Scope,
    wait: Duration,
    until: Option<&str>,
) -> Result<Vec<(Found, Duration)>, String> {
    let started = tokio::time::Instant::now();
    let mut rx = watch(scope)?;
    let mut found: Vec<(Found, Duration)> = vec![];
    let deadline = started + wait;
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let done = until == Some(f.id.as_str());
        match found.iter_mut().find(|x| x.0.id == f.id) {
            Some(x) => x.0 = f,
            None => found.push((f, started.elapsed())),
        }
        if done {
            break;
        }
    }
    Ok(found)
}
