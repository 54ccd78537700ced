//! `vmux up`: signer and agent on one machine, approvals in this terminal.

use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use vmux_agent::Agent;
use vmux_signer::control::{control_call, ControlRequest};

#[derive(Args)]
pub struct UpArgs {
    /// Where the signer listens; other workstations can pair with it there too.
    /// Default: the signer's configured address (127.0.0.1:7227), or a free loopback
    /// port when that is taken; the address used is recorded in the signer's config,
    /// so the service units (`install-service`) use the same one.
    #[arg(long)]
    listen: Option<String>,
    /// Where the agent socket goes (default `~/.ssh/vmux-agent.sock`, or
    /// `$VMUX_HOME/agent.sock` when VMUX_HOME is set).
    #[arg(long)]
    socket: Option<std::path::PathBuf>,
    /// No full-screen sheet: ask `Approve? [y/N]` line by line instead.
    #[arg(long)]
    no_ui: bool,
    /// Another agent's socket whose keys the agent lists after its own (they sign
    /// without a prompt, outside vmux's promise), as `vmux agent run --upstream`.
    #[arg(long)]
    upstream: Option<std::path::PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let shome = super::signer::home();
    let ahome = super::agent::home();
    const LOOPBACK: &str = "127.0.0.1:7227";
    if !shome.exists() {
        let name = format!("{}-signer", vmux_agent::state::hostname());
        let line =
            super::signer::init(&shome, None, &name, "ecdsa", "", None, &Default::default())?;
        // A signer made by `vmux up` serves this machine: a later `vmux signer run` must
        // not open it to the network or advertise it, unless --listen said so.
        let mut config = shome.load_config()?;
        let lan = args
            .listen
            .as_deref()
            .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
            .is_some_and(|a| !a.ip().is_loopback());
        config.listen = args.listen.clone().unwrap_or_else(|| LOOPBACK.into());
        if !lan {
            config.discovery = "off".into();
        }
        shome.save_config(&config)?;
        println!(
            "initialized signer {name:?} in {} with key\n  {line}",
            shome.dir.display()
        );
    }
    let signer = super::signer::open(&shome)?;
    let wanted = args
        .listen
        .clone()
        .unwrap_or_else(|| signer.config.listen.clone());
    let listener = match tokio::net::TcpListener::bind(&wanted).await {
        Ok(l) => l,
        // The usual port is taken (another signer, another `vmux up`): any free
        // loopback port, recorded below, unless the address was asked for.
        Err(e) if args.listen.is_none() && e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{wanted} is in use; listening on a free loopback port instead");
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {wanted}")),
    };
    let addr = listener.local_addr()?.to_string();
    // `vmux up` and the service units use one address: the one used now.
    let mut config = shome.load_config()?;
    if config.listen != addr {
        config.listen = addr.clone();
        shome.save_config(&config)?;
    }
    super::signer::start(&signer, &shome).await?;
    tokio::spawn(signer.clone().serve(listener));
    // A loopback signer serves only this machine's agent, which knows its address:
    // advertise only when `--listen` lets other machines in.
    let local: std::net::SocketAddr = addr.parse()?;
    let _advert = if local.ip().is_loopback() {
        None
    } else {
        super::signer::advertise(&signer, local)?
    };
    println!("signer {:?} listening on {addr}", signer.config.name);

    // Pair the local agent with the local signer once; afterwards only the address is
    // refreshed.
    let mut signers = ahome.load_signers()?;
    match signers
        .iter_mut()
        .find(|s| s.public_key == signer.identity.public())
    {
        Some(s) => {
            s.address = addr.clone();
            ahome.save_signers(&signers)?;
        }
        None => pair_locally(&ahome, &shome, &addr).await?,
    }

    let agent = Agent::open(ahome.clone())?;
    if let Some(u) = args.upstream {
        agent.set_upstream(u);
    }
    // Fetch the key list once before saying "ready", so `ssh-add -l` works at once.
    let local = vmux_proto::identity::device_id(signer.identity.public());
    if let Err(e) = agent.link(&local).await {
        tracing::warn!("local signer: {e}");
    }
    let path = args.socket.unwrap_or_else(|| ahome.socket(&agent.config));
    let listener = super::agent::bind(&agent, &path).await?;
    let sock = super::agent::shell_quote(&path);
    println!("SSH_AUTH_SOCK={sock}; export SSH_AUTH_SOCK;");
    for line in super::signer::public_lines_of(&shome)? {
        println!("public key: {line}");
    }
    use std::io::IsTerminal;
    let served = if !args.no_ui && std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
    {
        let opts = vmux_signer::sheet::Options {
            header: vec![
                format!(
                    "signer {:?} on {addr}; agent: SSH_AUTH_SOCK={sock}",
                    signer.config.name
                ),
                format!("In another terminal: export SSH_AUTH_SOCK={sock}, then ssh as usual. [k] public keys and CA line"),
            ],
            log: shome.output_log(),
            confirm_quit: Some("Stop agent and signer?".into()),
        };
        let sheet = vmux_signer::sheet::run(signer.clone(), opts);
        tokio::select! {
            r = super::agent::serve(agent, listener, &path) => r,
            r = sheet => r.map_err(anyhow::Error::from),
        }
    } else {
        println!("Requests appear below; answer y to approve, anything else denies (a pairing: type its code). Ctrl-C stops.");
        let prompt = vmux_signer::prompt::prompt(
            signer.clone(),
            vmux_signer::prompt::read_terminal(),
            tokio::io::stdout(),
        );
        // When input ends the prompt stops; decisions can still come from the control socket.
        tokio::spawn(prompt);
        super::agent::serve(agent, listener, &path).await
    };
    let _ = std::fs::remove_file(shome.control_socket());
    signer.remove_listening();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Pair through the signer's control socket: the person who ran `vmux up` owns both ends,
/// and the code is still checked to be the one this handshake produced.
async fn pair_locally(
    ahome: &vmux_agent::AgentHome,
    shome: &vmux_signer::SignerHome,
    addr: &str,
) -> anyhow::Result<()> {
    let config = ahome.load_config()?;
    let identity = vmux_proto::Identity::load_or_create(&ahome.identity())?;
    let my_name = config.device_name();
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let (back_tx, back_rx) = tokio::sync::oneshot::channel::<String>();
    let pairing = vmux_agent::pair::pair(
        ahome,
        &identity,
        &my_name,
        addr,
        Duration::from_secs(30),
        move |code| {
            let _ = code_tx.send(code.to_string());
        },
        move || Box::pin(async move { back_rx.await.ok() }),
    );
    let approver = async {
        let code = code_rx.await.context("pairing did not start")?;
        let control = shome.control_socket();
        for _ in 0..100 {
            let resp = control_call(&control, &ControlRequest::Pending {}).await?;
            let found = resp
                .pending
                .unwrap_or_default()
                .into_iter()
                .any(|p| p.kind == "pair" && p.code.as_deref() == Some(code.as_str()));
            if found {
                let req = ControlRequest::ApproveCode {
                    code: code.clone(),
                    secret: None,
                };
                let resp = control_call(&control, &req).await?;
                // The signer's own code, typed back on this side: both ends are here.
                let back = resp
                    .pending
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|p| p.signer_code)
                    .context("the local signer showed no code of its own")?;
                let _ = back_tx.send(back);
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the local signer never showed the pairing request")
    };
    let (paired, approved) = tokio::join!(pairing, approver);
    approved?;
    let s = paired?;
    println!("paired the local agent with signer {:?}", s.name);
    Ok(())
}
