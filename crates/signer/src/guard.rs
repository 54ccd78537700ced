//! What an unauthenticated peer can cost the signer, bounded: connections that have not
//! proved a paired key yet (in all and per source address), pairings waiting for a
//! person, and what their refusals write to the decision log. Everything a peer sends
//! before that is capped in size where it arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections in their handshake or first messages, in all and per address.
pub const MAX_PREAUTH: usize = 128;
pub const MAX_PREAUTH_PER_ADDR: usize = 16;
/// Pairings waiting for a person, in all and per address.
pub const MAX_PAIRINGS: usize = 4;
pub const MAX_PAIRINGS_PER_ADDR: usize = 2;
/// Refusals logged per address per minute (the rest are counted, then summarised).
const REFUSALS_LOGGED_PER_MINUTE: u32 = 1;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked for refusal summaries; beyond this, counted as "other addresses".
const TRACKED: usize = 1024;

#[derive(Default)]
struct Counts {
    total: usize,
    per: HashMap<IpAddr, usize>,
}

/// Held while a connection is unauthenticated (or a pairing waits); released on drop.
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    addr: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.addr);
            }
        }
    }
}

fn take(counts: &Arc<Mutex<Counts>>, addr: IpAddr, total: usize, per: usize) -> Option<Permit> {
    let mut c = counts.lock().unwrap();
    let mine = c.per.get(&addr).copied().unwrap_or(0);
    if c.total >= total || mine >= per {
        return None;
    }
    c.total += 1;
    *c.per.entry(addr).or_insert(0) += 1;
    Some(Permit {
        counts: counts.clone(),
        addr,
    })
}

struct Refusals {
    window_start: Instant,
    per: HashMap<IpAddr, u32>,
    other: u32,
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
            }),
        }
    }
}

impl Gate {
    /// A new connection from `addr`, or `None` when too many are unauthenticated.
    pub fn admit(&self, addr: IpAddr) -> Option<Permit> {
        take(&self.preauth, addr, MAX_PREAUTH, MAX_PREAUTH_PER_ADDR)
    }

    /// A pairing from `addr` may wait for a person, or `None` when too many do.
    pub fn pairing(&self, addr: IpAddr) -> Option<Permit> {
        take(&self.pairings, addr, MAX_PAIRINGS, MAX_PAIRINGS_PER_ADDR)
    }

    /// Count a refusal from `addr`. Returns whether to log it, and the summaries of
    /// the minute that just ended (`(address, refusals not logged)`), to log first.
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
        if !r.per.contains_key(&addr) && r.per.len() >= TRACKED {
            r.other += 1;
            return (Note::Quiet, summary);
        }
        let n = r.per.entry(addr).or_insert(0);
        *n += 1;
        let note = if *n <= REFUSALS_LOGGED_PER_MINUTE {
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
/// meet the per-address caps, not the default 1024).
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
    fn caps_hold_per_address_and_in_all() {
        let g = Gate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Permit> = (0..MAX_PREAUTH_PER_ADDR)
            .map(|_| g.admit(a).unwrap())
            .collect();
        assert!(g.admit(a).is_none());
        assert!(g.admit(b).is_some());
        drop(held);
        assert!(g.admit(a).is_some());
        let p1 = g.pairing(a).unwrap();
        let _p2 = g.pairing(a).unwrap();
        assert!(g.pairing(a).is_none(), "per-address pairing cap");
        assert!(g.pairing(b).is_some(), "another address still pairs");
        drop(p1);
        assert!(g.pairing(a).is_some());
        assert!(matches!(g.refused(a).0, Note::Log));
        assert!(matches!(g.refused(a).0, Note::Quiet));
    }
}
