//! `vmux status`: the agent and the signer on this machine in one view, with exit codes
//! for scripts (0 all well; 3 the agent is not running; 4 the signer is not running; 5
//! a paired signer is not connected; 6 nothing is set up here) and `--json`.

use std::process::ExitCode;
use vmux_signer::control::{control_call, ControlRequest, SignerStatus};

pub async fn run(json: bool) -> anyhow::Result<ExitCode> {
    let ahome = super::agent::home();
    let shome = super::signer::home();
    let agent_here = ahome.config().exists() || ahome.signers().exists();
    let signer_here = shome.exists();
    let agent = super::agent::running_status(&ahome).await?;
    let signer: Option<SignerStatus> = if signer_here {
        control_call(&shome.control_socket(), &ControlRequest::Status {})
            .await
            .ok()
            .and_then(|r| r.status)
    } else {
        None
    };
    let paired = ahome.load_signers()?;
    let upstream = super::upstream::Report::probe(&ahome, agent.as_ref()).await?;
    let unlinked = agent
        .as_ref()
        .is_some_and(|s| s.signers.iter().any(|x| !x.connected));
    let code: u8 = if !agent_here && !signer_here {
        6
    } else if agent_here && agent.is_none() {
        3
    } else if signer_here && signer.is_none() {
        4
    } else if unlinked || (agent.is_some() && paired.is_empty()) {
        5
    } else {
        0
    };
    if json {
        let v = serde_json::json!({
            "ok": code == 0,
            "exitCode": code,
            "agent": agent_here.then(|| super::agent::status_json(&ahome, agent.as_ref(), &upstream)).transpose()?,
            "signer": signer_here.then(|| serde_json::json!({
                "running": signer.is_some(),
                "status": signer,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::from(code));
    }
    if code == 6 {
        println!(
            "nothing set up here ({}): `vmux up` sets up both on this machine; `vmux agent pair` or `vmux signer init` one side",
            vmux_proto::store::vmux_home().display()
        );
        return Ok(ExitCode::from(code));
    }
    if agent_here {
        for l in super::agent::status_lines(&ahome, agent.as_ref())? {
            println!("{l}");
        }
        upstream.print();
    }
    if signer_here {
        match &signer {
            Some(s) => {
                println!(
                    "signer {:?}: running (pid {}){}; fingerprint {}",
                    s.name,
                    s.pid,
                    s.address
                        .as_deref()
                        .map(|a| format!(" on {a}"))
                        .unwrap_or_default(),
                    s.fingerprint
                );
                if let Some(line) = super::reach::signer_line(&shome.dir, s.pid) {
                    println!("  {line}");
                }
                if s.devices.is_empty() {
                    println!("  no paired devices (pair one with `vmux agent pair` on it)");
                }
                for d in &s.devices {
                    println!(
                        "  device {} ({}): {}",
                        d.name,
                        d.id,
                        if d.connected {
                            "connected".to_string()
                        } else {
                            format!(
                                "not connected, last seen {}",
                                super::local_time(d.last_seen)
                            )
                        }
                    );
                }
                for k in &s.keys {
                    println!(
                        "  key {}  {}  {}  [{}]{}",
                        k.fingerprint,
                        k.comment,
                        k.algorithm,
                        k.store,
                        if k.enabled { "" } else { " (disabled)" }
                    );
                }
                match &s.ca {
                    Some(ca) => println!("  CA: {ca}"),
                    None => println!("  no CA key (`vmux signer ca init`)"),
                }
                println!(
                    "  pending: {}{}",
                    s.pending,
                    if s.pending > 0 {
                        " (`vmux signer pending`)"
                    } else {
                        ""
                    }
                );
            }
            None => println!("signer: not running (start it with `vmux signer run` or `vmux up`)"),
        }
    }
    Ok(ExitCode::from(code))
}
