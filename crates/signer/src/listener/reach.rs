//! The signer reached by its iroh endpoint id. A connection that arrives over iroh goes
//! through the same door as a TCP one (`listener::accept`: Noise XX, Hello, a paired
//! device or `pairingInvalid`) and under the same bounds on unauthenticated work
//! (`guard`), counted per endpoint id in a pool of their own, plus a cap on QUIC
//! handshakes in progress. `signer/reach.toml` is watched: turning reach on or off takes
//! effect on the running signer within seconds, and connected devices are told at once.
//! While reach is local there is no endpoint, so no relay connection and no packet
//! leaves for anywhere but the local network.

#[cfg(feature = "reach")]
use crate::reach::peer_addr;
use crate::reach::{modified, status_path, ReachStatus};
use crate::signer::Signer;
use std::sync::atomic::Ordering;
use std::sync::Arc;
#[cfg(feature = "reach")]
use std::sync::Weak;
use std::time::Duration;
use vmux_proto::envelope::{Message, Reach};
use vmux_proto::reach::{self, ReachConfig};

#[cfg(feature = "reach")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `reach.toml` is looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

impl Signer {
    /// What this signer tells its devices about its reach now.
    pub fn reach_info(&self) -> Reach {
        reach::info(&self.identity, &self.reach.config())
    }

    /// Start serving reach as configured, and follow `reach.toml` from now on (once
    /// per signer, however many listeners serve).
    pub(crate) fn start_reach(self: &Arc<Self>) {
        if self.reach.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(s) = weak.upgrade() else { return };
                s.follow_reach_file(first).await;
                drop(s);
                first = false;
                tokio::time::sleep(WATCH_EVERY).await;
            }
        });
    }

    /// Apply `reach.toml` if it changed (or at start): bring the endpoint up or down
    /// and tell every connected device.
    async fn follow_reach_file(self: &Arc<Self>, first: bool) {
        let dir = self.home.dir.clone();
        let now = modified(&dir);
        if !first {
            let mut t = self.reach.file_time.lock().unwrap();
            if *t == now {
                return;
            }
            *t = now;
            drop(t);
            match ReachConfig::load(&dir) {
                Ok(c) if c == self.reach.config() => return,
                Ok(c) => {
                    tracing::info!("reach is now {}", c.describe());
                    *self.reach.config.lock().unwrap() = c;
                }
                Err(e) => {
                    tracing::warn!("{e}; reach stays as it was");
                    return;
                }
            }
        }
        #[cfg(feature = "reach")]
        {
            let old = self.reach.endpoint.lock().unwrap().take();
            if let Some(ep) = old {
                ep.close().await;
            }
        }
        let config = self.reach.config();
        let mut status = ReachStatus {
            pid: std::process::id(),
            anywhere: config.anywhere(),
            endpoint_id: reach::endpoint_id(&self.identity),
            ..Default::default()
        };
        if config.anywhere() {
            if let Err(e) = self.bring_up(&config, &status).await {
                tracing::error!("reach anywhere: {e}");
                status.error = Some(e);
            }
        }
        write_status(&self.home.dir, &status);
        if !first {
            let info = self.reach_info();
            for out in self.outboxes() {
                let _ = out.send(Message::Reach(info.clone())).await;
            }
        }
    }
}

impl Signer {
    /// Bind the endpoint and serve links that arrive on it.
    #[cfg(feature = "reach")]
    async fn bring_up(
        self: &Arc<Self>,
        config: &ReachConfig,
        status: &ReachStatus,
    ) -> Result<(), String> {
        let ep = reach::bind(&self.identity, config, true)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            "reachable anywhere as endpoint {} ({})",
            ep.id(),
            config.describe()
        );
        *self.reach.endpoint.lock().unwrap() = Some(ep.clone());
        tokio::spawn(serve(Arc::downgrade(self), ep.clone()));
        tokio::spawn(report_home_relay(self.home.dir.clone(), ep, status.clone()));
        Ok(())
    }

    #[cfg(not(feature = "reach"))]
    async fn bring_up(
        self: &Arc<Self>,
        _config: &ReachConfig,
        _status: &ReachStatus,
    ) -> Result<(), String> {
        Err(reach::NOT_BUILT.into())
    }
}

fn write_status(dir: &std::path::Path, status: &ReachStatus) {
    if let Err(e) = vmux_proto::store::write_json(&status_path(dir), status) {
        tracing::warn!("{e}");
    }
}

#[cfg(feature = "reach")]
/// Say which relay the signer is reachable through, once it is.
async fn report_home_relay(dir: std::path::PathBuf, ep: iroh::Endpoint, mut status: ReachStatus) {
    tokio::select! {
        _ = ep.online() => {}
        _ = ep.closed() => return,
    }
    let relay = ep.addr().relay_urls().next().map(|u| u.to_string());
    if let Some(r) = &relay {
        tracing::info!("reachable through relay {r}");
    }
    status.home_relay = relay;
    if !ep.is_closed() {
        write_status(&dir, &status);
    }
}

#[cfg(feature = "reach")]
/// Accept iroh connections until the endpoint closes (reach turned local) or the
/// signer is gone.
async fn serve(signer: Weak<Signer>, ep: iroh::Endpoint) {
    while let Some(incoming) = ep.accept().await {
        let Some(s) = signer.upgrade() else { return };
        let Ok(handshake) = s.reach.handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        tokio::spawn(async move {
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                incoming.accept().ok()?.await.ok()
            })
            .await
            {
                Ok(Some(c)) => c,
                _ => return,
            };
            let id = conn.remote_id();
            let addr = peer_addr(&id);
            let who = format!("iroh endpoint {}", id.fmt_short());
            let Some(permit) = s.reach.gate.admit(addr) else {
                s.refusal(addr, &who, "too many unauthenticated connections");
                conn.close(1u32.into(), b"busy");
                return;
            };
            drop(handshake);
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, reach::accept_stream(conn)).await {
                    Ok(Ok(st)) => st,
                    _ => {
                        s.refusal(addr, &who, "no link stream");
                        return;
                    }
                };
            if let Err(e) = crate::listener::accept(&s, stream, addr, permit).await {
                s.refusal(addr, &who, &e.to_string());
            }
        });
    }
}
