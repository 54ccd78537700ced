//! What an unauthenticated peer can cost the signer, bounded: connections that have not
//! proved a paired key yet (in all, and per network: an IPv4 /24 or an IPv6 /64, since
//! one host owns a whole /64), pairings waiting for a person and pairing attempts per
//! minute (per network and for the whole signer), and what their refusals write to the
//! decision log (per address per minute, and in all per hour). Everything a peer sends
//! before that is capped in size where it arrives (`vmux_proto::frame`).
//!
//! A paired device must always get through: when the unauthenticated slots are full,
//! a new connection takes the place of the oldest stranger (whose handshake, if it were
//! honest, would long have finished), and under pressure the handshake deadline
//! shortens.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections in their handshake or first messages, in all and per network.
pub const MAX_PREAUTH: usize = 128;
pub const MAX_PREAUTH_PER_NET: usize = 16;
/// Pairings waiting for a person, in all and per address (an IPv6 /64 is one address).
pub const MAX_PAIRINGS: usize = 8;
pub const MAX_PAIRINGS_PER_ADDR: usize = 1;
/// Pairing attempts per minute, per address and for the whole signer (a person pairs
/// a device a minute at most; a middleman grinding for a matching code gets as few).
/// Pairing is counted per address, not per network: the person's own workstation
/// shares its network with whoever grinds.
pub const PAIRINGS_PER_MINUTE_PER_ADDR: u32 = 3;
pub const PAIRINGS_PER_MINUTE: u32 = 20;
/// How long a stranger may take for its handshake: normally, and when the slots are
/// more than half full.
pub const HANDSHAKE: Duration = Duration::from_secs(5);
pub const HANDSHAKE_UNDER_PRESSURE: Duration = Duration::from_secs(1);
/// Refusals logged per address per minute, and in all per hour (the rest are counted,
/// then summarised).
const REFUSALS_LOGGED_PER_MINUTE: u32 = 1;
const REFUSALS_LOGGED_PER_HOUR: u32 = 120;
const WINDOW: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Addresses tracked for refusal summaries; beyond this, counted as "other addresses".
const TRACKED: usize = 1024;

/// What a pairing counts against: the address itself, or its IPv6 /64.
pub fn host(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => network(addr),
        },
    }
}

/// The network an address counts against: its IPv4 /24 or IPv6 /64.
pub fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::V4([o[0], o[1], o[2], 0].into())
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let mut s = a.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per: HashMap<IpAddr, usize>,
    /// Unauthenticated connections, oldest first: (serial, network, evict).
    order: VecDeque<(u64, IpAddr, Arc<tokio::sync::Notify>)>,
    next: u64,
}

/// Held while a connection is unauthenticated (or a pairing waits); released on drop.
/// `evicted` resolves when a newer connection took this one's place.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    net: IpAddr,
    serial: u64,
    evict: Arc<tokio::sync::Notify>,
}

impl Permit {
    /// Resolves when this stranger's slot was given to a newer connection.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        let before = c.order.len();
        c.order.retain(|(s, _, _)| *s != self.serial);
        if c.order.len() == before {
            // Already evicted: its counts went with it.
            return;
        }
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.net) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.net);
            }
        }
    }
}

/// Take a slot for `net`: with `evict`, a full network (or a full table) gives its
/// oldest stranger's slot to this one; without, `None`.
fn take(
    counts: &Arc<Mutex<Counts>>,
    net: IpAddr,
    total: usize,
    per: usize,
    evict: bool,
) -> Option<Permit> {
    let mut c = counts.lock().unwrap();
    let net_full = c.per.get(&net).copied().unwrap_or(0) >= per;
    if net_full || c.total >= total {
        if !evict {
            return None;
        }
        let pos = if net_full {
            c.order.iter().position(|(_, n, _)| *n == net)?
        } else {
            0
        };
        let (_, old_net, notify) = c.order.remove(pos)?;
        c.total -= 1;
        if let Some(n) = c.per.get_mut(&old_net) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&old_net);
            }
        }
        notify.notify_one();
    }
    c.total += 1;
    *c.per.entry(net).or_insert(0) += 1;
    c.next += 1;
    let serial = c.next;
    let notify = Arc::new(tokio::sync::Notify::new());
    c.order.push_back((serial, net, notify.clone()));
    Some(Permit {
        counts: counts.clone(),
        net,
        serial,
        evict: notify,
    })
}

struct Refusals {
    window_start: Instant,
    per: HashMap<IpAddr, u32>,
    other: u32,
    hour_start: Instant,
    logged_this_hour: u32,
    quiet_this_hour: u32,
}

/// Tokens for pairing attempts in the current minute, per network and in all.
struct Attempts {
    window_start: Instant,
    per: HashMap<IpAddr, u32>,
    total: u32,
}

/// What to write to the log about one refusal: nothing (counted), or a record.
pub enum Note {
    Log,
    Quiet,
}

pub struct Gate {
    preauth: Arc<Mutex<Counts>>,
    pairings: Arc<Mutex<Counts>>,
    refusals: Mutex<Refusals>,
    attempts: Mutex<Attempts>,
    /// When the last pairing notification was raised (one a minute at most).
    notified: Mutex<Option<Instant>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            preauth: Default::default(),
            pairings: Default::default(),
            refusals: Mutex::new(Refusals {
                window_start: Instant::now(),
                per: HashMap::new(),
                other: 0,
                hour_start: Instant::now(),
                logged_this_hour: 0,
                quiet_this_hour: 0,
            }),
            attempts: Mutex::new(Attempts {
                window_start: Instant::now(),
                per: HashMap::new(),
                total: 0,
            }),
            notified: Mutex::new(None),
        }
    }
}

impl Gate {
    /// A new connection from `addr`. When its network holds its share, or every slot is
    /// taken, the oldest stranger's slot (of that network, or of all) is given to this
    /// one: strangers that are slow to finish a handshake make room for a device that
    /// finishes in milliseconds.
    pub fn admit(&self, addr: IpAddr) -> Option<Permit> {
        take(
            &self.preauth,
            network(addr),
            MAX_PREAUTH,
            MAX_PREAUTH_PER_NET,
            true,
        )
    }

    /// How long a stranger may take for its handshake now.
    pub fn handshake_deadline(&self) -> Duration {
        if self.preauth.lock().unwrap().total > MAX_PREAUTH / 2 {
            HANDSHAKE_UNDER_PRESSURE
        } else {
            HANDSHAKE
        }
    }

    /// A pairing from `addr` may wait for a person, or `None` when too many do, or when
    /// its address or the whole signer made too many attempts this minute.
    pub fn pairing(&self, addr: IpAddr) -> Option<Permit> {
        let net = host(addr);
        {
            let mut a = self.attempts.lock().unwrap();
            if a.window_start.elapsed() >= WINDOW {
                a.window_start = Instant::now();
                a.per.clear();
                a.total = 0;
            }
            let mine = a.per.get(&net).copied().unwrap_or(0);
            if mine >= PAIRINGS_PER_MINUTE_PER_ADDR || a.total >= PAIRINGS_PER_MINUTE {
                return None;
            }
            if a.per.len() < TRACKED || a.per.contains_key(&net) {
                *a.per.entry(net).or_insert(0) += 1;
            }
            a.total += 1;
        }
        take(
            &self.pairings,
            net,
            MAX_PAIRINGS,
            MAX_PAIRINGS_PER_ADDR,
            false,
        )
    }

    /// Whether a pairing may raise a desktop notification now (one a minute).
    pub fn may_notify_pairing(&self) -> bool {
        let mut n = self.notified.lock().unwrap();
        if n.is_some_and(|t| t.elapsed() < WINDOW) {
            return false;
        }
        *n = Some(Instant::now());
        true
    }

    /// Count a refusal from `addr`. Returns whether to log it, and the summaries of
    /// the minute (or hour) that just ended (`(address, refusals not logged)`), to log
    /// first.
    pub fn refused(&self, addr: IpAddr) -> (Note, Vec<(String, u32)>) {
        let mut r = self.refusals.lock().unwrap();
        let mut summary = vec![];
        if r.window_start.elapsed() >= WINDOW {
            summary = r
                .per
                .drain()
                .filter(|(_, n)| *n > REFUSALS_LOGGED_PER_MINUTE)
                .map(|(a, n)| (a.to_string(), n - REFUSALS_LOGGED_PER_MINUTE))
                .collect();
            if r.other > 0 {
                summary.push(("other addresses".into(), r.other));
            }
            r.other = 0;
            r.window_start = Instant::now();
        }
        if r.hour_start.elapsed() >= HOUR {
            if r.quiet_this_hour > 0 {
                summary.push((
                    "all addresses, over the hourly cap".into(),
                    r.quiet_this_hour,
                ));
            }
            r.hour_start = Instant::now();
            r.logged_this_hour = 0;
            r.quiet_this_hour = 0;
        }
        // Summaries count against the hourly cap too.
        if r.logged_this_hour >= REFUSALS_LOGGED_PER_HOUR {
            r.quiet_this_hour += 1;
            return (Note::Quiet, vec![]);
        }
        r.logged_this_hour += summary.len() as u32;
        if !r.per.contains_key(&addr) && r.per.len() >= TRACKED {
            r.other += 1;
            return (Note::Quiet, summary);
        }
        let n = r.per.entry(addr).or_insert(0);
        *n += 1;
        let note = if *n <= REFUSALS_LOGGED_PER_MINUTE {
            r.logged_this_hour += 1;
            Note::Log
        } else {
            Note::Quiet
        };
        (note, summary)
    }
}

/// Back-off after a failed `accept()` (out of file descriptors, a peer that reset):
/// log it once, wait a little, go on. Never fatal.
pub async fn accept_failed(what: &str, e: &std::io::Error, backoff: &mut Duration) {
    tracing::warn!("{what}: accept failed ({e}); retrying in {backoff:?}");
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
}

/// Raise the soft open-file limit to the hard one (a flood of idle connections should
/// meet the per-network caps, not the default 1024).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_network_and_in_all() {
        let g = Gate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let a2: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.1.1".parse().unwrap();
        let held: Vec<Permit> = (0..MAX_PREAUTH_PER_NET)
            .map(|i| g.admit(if i % 2 == 0 { a } else { a2 }).unwrap())
            .collect();
        // One /24 holds its share: a newcomer from it takes its oldest slot.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let newcomer = g.admit(a).unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), held[0].evicted())
                .await
                .expect("the oldest stranger was told to go")
        });
        assert!(g.admit(b).is_some(), "another network gets in");
        drop(held);
        drop(newcomer);
        assert!(g.admit(a).is_some());
        let p1 = g.pairing(a).unwrap();
        let _p2 = g.pairing(a2).unwrap();
        assert!(g.pairing(a).is_none(), "one waiting pairing per address");
        assert!(g.pairing(b).is_some(), "another address still pairs");
        drop(p1);
        assert!(matches!(g.refused(a).0, Note::Log));
        assert!(matches!(g.refused(a).0, Note::Quiet));
    }

    #[test]
    fn a_whole_ipv6_64_counts_as_one_address() {
        let g = Gate::default();
        let held: Vec<Permit> = (0..1000u16)
            .filter_map(|i| g.admit(format!("2001:db8:1:2::{i:x}").parse().unwrap()))
            .collect();
        // A thousand addresses of one /64 hold one network's share, no more.
        assert_eq!(g.preauth.lock().unwrap().total, MAX_PREAUTH_PER_NET);
        drop(held);
    }

    #[test]
    fn a_full_table_gives_the_oldest_strangers_slot_away() {
        let g = Gate::default();
        let mut held = vec![];
        for i in 0..(MAX_PREAUTH / MAX_PREAUTH_PER_NET) {
            for j in 0..MAX_PREAUTH_PER_NET {
                held.push(g.admit(format!("10.{i}.0.{j}").parse().unwrap()).unwrap());
            }
        }
        assert_eq!(g.handshake_deadline(), HANDSHAKE_UNDER_PRESSURE);
        let newcomer = g.admit("192.168.1.5".parse().unwrap());
        assert!(newcomer.is_some(), "a paired device must get through");
        drop(held);
        drop(newcomer);
        assert_eq!(g.handshake_deadline(), HANDSHAKE);
    }

    #[test]
    fn pairing_attempts_are_throttled_for_the_whole_signer() {
        let g = Gate::default();
        let mut ok = 0;
        for i in 0..100u32 {
            let p = g.pairing(format!("10.{}.{}.1", i / 250, i % 250).parse().unwrap());
            if p.is_some() {
                ok += 1;
            }
        }
        assert!(ok <= PAIRINGS_PER_MINUTE, "{ok}");
        // One address, many attempts a minute: a handful.
        let g = Gate::default();
        let one: IpAddr = "10.9.9.9".parse().unwrap();
        let tries = (0..56).filter(|_| g.pairing(one).is_some()).count();
        assert!(tries <= PAIRINGS_PER_MINUTE_PER_ADDR as usize, "{tries}");
        assert!(g.pairing("10.9.9.10".parse().unwrap()).is_some());
        assert!(g.may_notify_pairing());
        assert!(!g.may_notify_pairing());
    }
}
