//! Reaching a paired signer from anywhere (`vmux agent reach anywhere`, and `vmux
//! client reach anywhere` for `vmux ssh`; off by default). The local route goes first:
//! the saved address (which discovery and `--signer` keep current). When it fails, or
//! has not answered within [`LOCAL_BUDGET`], and the signer said it accepts links from
//! anywhere, the agent also dials the signer's iroh endpoint id; the first link up
//! wins. The Noise session inside is the TCP one, with the same pinned key.
//!
//! `reach.toml` is read again whenever it changed, so the running agent follows
//! `vmux agent reach …` from its next connection on. The agent's own endpoint is made
//! only when a remote dial is needed, and closed when reach turns local.

use crate::agent::Agent;
use crate::link::SignerLink;
use crate::state::PairedSigner;
use crate::AgentError;
use std::time::Duration;
use vmux_proto::envelope::{KeyRecord, Reach};
use vmux_proto::reach::ReachConfig;
#[cfg(feature = "reach")]
use vmux_proto::reach::{self, LOCAL_BUDGET};

/// How the link to a signer is dialled.
type Dialled = (SignerLink, Vec<KeyRecord>);
/// A dial under way (boxed: the futures that await it stay small).
type Dialling<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Dialled, AgentError>> + Send + 'a>>;

impl Agent {
    /// This device's reach configuration, as `reach.toml` says now.
    pub fn reach_config(&self) -> ReachConfig {
        let path = ReachConfig::path(&self.home.dir);
        let t = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut c = self.reach.config.lock().unwrap();
        if c.0 != t || (t.is_none() && c.1 != ReachConfig::default()) {
            match ReachConfig::load(&self.home.dir) {
                Ok(new) => *c = (t, new),
                Err(e) => tracing::warn!("{e}; reach stays {}", c.1.describe()),
            }
        }
        c.1.clone()
    }

    /// Dial a paired signer: locally first, from anywhere when allowed and needed.
    pub(crate) async fn dial_signer(
        &self,
        s: &PairedSigner,
        timeout: Duration,
    ) -> Result<Dialled, AgentError> {
        let config = self.reach_config();
        let remote = s
            .reach
            .clone()
            .filter(|r| r.anywhere && !r.endpoint_id.is_empty());
        let local: Dialling<'_> = Box::pin(SignerLink::connect(
            &s.address,
            &self.identity,
            &self.name,
            &s.public_key,
            timeout,
        ));
        #[cfg(not(feature = "reach"))]
        let remote: Option<Reach> = remote.filter(|_| false);
        #[cfg(feature = "reach")]
        if !config.anywhere() {
            self.close_endpoint().await;
        }
        let Some(remote) = remote.filter(|_| config.anywhere()) else {
            let device = if self.home.client { "client" } else { "agent" };
            return local.await.map_err(|e| with_hint(e, s, &config, device));
        };
        self.race(s, local, remote, &config, timeout).await
    }

    /// The local dial has its budget; then the remote one runs beside it.
    #[cfg(feature = "reach")]
    async fn race(
        &self,
        s: &PairedSigner,
        local: Dialling<'_>,
        remote: Reach,
        config: &ReachConfig,
        timeout: Duration,
    ) -> Result<Dialled, AgentError> {
        let mut local = local;
        let local_error = match tokio::time::timeout(LOCAL_BUDGET, &mut local).await {
            Ok(Ok(l)) => return Ok(l),
            Ok(Err(e @ AgentError::Refused(..))) => return Err(e),
            Ok(Err(e)) => Some(e),
            Err(_) => None,
        };
        let anywhere = self.dial_anywhere(s, &remote, config, timeout);
        tokio::pin!(anywhere);
        let dialled = match local_error {
            Some(_) => anywhere.await,
            None => tokio::select! {
                r = &mut local => match r {
                    Ok(l) => Ok(l),
                    Err(e @ AgentError::Refused(..)) => return Err(e),
                    Err(_) => anywhere.await,
                },
                r = &mut anywhere => match r {
                    Ok(l) => Ok(l),
                    Err(e) => local.await.map_err(|_| e),
                },
            },
        };
        match dialled {
            Ok(l) => Ok(l),
            Err(e @ (AgentError::Refused(..) | AgentError::PinMismatch { .. })) => Err(e),
            Err(e) => Err(AgentError::Unreachable {
                addr: format!("{} or endpoint {}", s.address, short(&remote.endpoint_id)),
                reason: format!("not on the local network, and from anywhere: {e}"),
            }),
        }
    }

    /// Without reach support there is only the local dial.
    #[cfg(not(feature = "reach"))]
    async fn race(
        &self,
        _s: &PairedSigner,
        local: Dialling<'_>,
        _remote: Reach,
        _config: &ReachConfig,
        _timeout: Duration,
    ) -> Result<Dialled, AgentError> {
        local.await
    }

    #[cfg(feature = "reach")]
    async fn dial_anywhere(
        &self,
        s: &PairedSigner,
        to: &Reach,
        config: &ReachConfig,
        timeout: Duration,
    ) -> Result<Dialled, AgentError> {
        let label = format!("endpoint {}", short(&to.endpoint_id));
        let work = async {
            let endpoint = self.endpoint(config).await?;
            let stream = reach::dial(&endpoint, to).await?;
            let route = stream.route();
            SignerLink::connect_over(
                stream,
                route,
                &label,
                &self.identity,
                &self.name,
                &s.public_key,
                timeout,
            )
            .await
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| AgentError::Unreachable {
                addr: label.clone(),
                reason: format!("no link within {}s", timeout.as_secs()),
            })?
    }

    #[cfg(feature = "reach")]
    /// The agent's endpoint for `config`, bound on first use (and again when the
    /// configuration changed).
    async fn endpoint(&self, config: &ReachConfig) -> Result<iroh::Endpoint, AgentError> {
        let mut ep = self.reach.endpoint.lock().await;
        if let Some((c, e)) = ep.as_ref() {
            if c == config && !e.is_closed() {
                return Ok(e.clone());
            }
        }
        if let Some((_, old)) = ep.take() {
            old.close().await;
        }
        let e = reach::bind(&self.identity, config, false).await?;
        tracing::info!("iroh endpoint {} ({})", e.id(), config.describe());
        *ep = Some((config.clone(), e.clone()));
        Ok(e)
    }

    #[cfg(feature = "reach")]
    /// Reach turned local: no endpoint, no relay connection.
    async fn close_endpoint(&self) {
        let old = self.reach.endpoint.lock().await.take();
        if let Some((_, e)) = old {
            tracing::info!("reach is local: closing the iroh endpoint");
            e.close().await;
        }
    }

    /// The signer told how it can be reached: keep it for the next dial.
    pub(crate) fn note_reach(&self, signer_id: &str, reach: Option<Reach>) {
        if reach.is_some() {
            self.update_signer(signer_id, |s| s.reach = reach.clone());
        }
    }
}

#[cfg(feature = "reach")]
fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// A local dial failed: when reach would get through (the signer accepts links from
/// anywhere, this device does not dial that way) or cannot (this device would, the
/// signer does not), say so and how to change it.
fn with_hint(e: AgentError, s: &PairedSigner, config: &ReachConfig, device: &str) -> AgentError {
    let AgentError::Unreachable { addr, reason } = e else {
        return e;
    };
    let signer_anywhere = s.reach.as_ref().is_some_and(|r| r.anywhere);
    if config.anywhere() && !vmux_proto::reach::BUILT {
        return AgentError::Unreachable {
            addr,
            reason: format!("{reason}; {}", vmux_proto::reach::NOT_BUILT),
        };
    }
    let hint = match (config.anywhere(), signer_anywhere) {
        (false, true) => format!(
            "not on {}'s network? it accepts links from anywhere: turn that on here with `vmux {device} reach anywhere`",
            s.name
        ),
        // Neither side reaches beyond the network: the usual reason is a signer that is
        // not running, which the error already says.
        (false, false) => return AgentError::Unreachable { addr, reason },
        (true, false) => format!(
            "{} does not accept links from anywhere: run `vmux signer reach anywhere` there while both are on one network",
            s.name
        ),
        (true, true) => return AgentError::Unreachable { addr, reason },
    };
    AgentError::Unreachable {
        addr,
        reason: format!("{reason}; {hint}"),
    }
}

/// How often a link's path is looked at (a relayed link may turn direct), and how
/// often the status file gets a fresh round-trip time at most.
const ROUTE_LOOK_EVERY: Duration = Duration::from_secs(2);
const RTT_REFRESH: Duration = Duration::from_secs(30);

impl Agent {
    /// While the link is up, rewrite the status when its path changes (relay → direct)
    /// and now and then for its round-trip time.
    pub(crate) fn spawn_route_watch(
        self: &std::sync::Arc<Self>,
        signer_id: &str,
        link: &SignerLink,
    ) {
        let (agent, link, id) = (self.clone(), link.clone(), signer_id.to_string());
        tokio::spawn(async move {
            let mut last = link.path().map(|p| p.0);
            let mut written = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(ROUTE_LOOK_EVERY).await;
                if !link.is_up() {
                    return;
                }
                let now = link.path().map(|p| p.0);
                if now != last {
                    tracing::info!(
                        "signer {}: link now {}",
                        agent.signer_name(&id),
                        now.as_deref().unwrap_or("gone")
                    );
                    last = now;
                } else if written.elapsed() < RTT_REFRESH {
                    continue;
                }
                written = tokio::time::Instant::now();
                agent.write_status();
            }
        });
    }
}
