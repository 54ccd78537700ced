//! The session channel (RFC 4254 §6): a PTY with the local size and `TERM` when
//! interactive, the shell or the command, stdin/stdout/stderr piped both ways, window
//! changes forwarded, and the remote exit status returned.

use crate::dial::Client;
use crate::terminal::{self, RawMode};
use crate::ClientError;
use russh::client::Handle;
use russh::ChannelMsg;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// `-t`/`-T` as ssh(1) reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tty {
    /// A PTY for an interactive shell on a terminal, none for a command.
    #[default]
    Auto,
    /// `-t`: a PTY when stdin is a terminal.
    Want,
    /// `-tt`: a PTY even when stdin is not a terminal.
    Force,
    /// `-T`: never.
    No,
}

/// How the session ended.
pub enum Ended {
    /// The remote command's exit status.
    Exit(u32),
    /// Killed by a signal there (ssh exits 255).
    Signal(String),
    /// The connection went away under the session.
    Lost(String),
    /// A local SIGTERM/SIGHUP.
    Interrupted,
}

/// What the session channel asks for.
pub struct Request<'a> {
    /// The command (words joined with spaces, as ssh does); empty: a shell.
    pub command: &'a [String],
    pub tty: Tty,
    /// The host, for messages.
    pub host: &'a str,
    /// `-A`: ask the server to forward an agent to this client.
    pub forward_agent: bool,
    /// `SendEnv`/`SetEnv` variables.
    pub env: Vec<(String, String)>,
}

pub async fn run(handle: &Arc<Handle<Client>>, r: Request<'_>) -> Result<Ended, ClientError> {
    let Request {
        command,
        tty,
        host,
        forward_agent,
        env,
    } = r;
    let lost = |e: russh::Error| ClientError::Lost {
        host: host.into(),
        reason: e.to_string(),
    };
    let ch = handle.channel_open_session().await.map_err(lost)?;
    if forward_agent {
        tracing::debug!("requesting agent forwarding");
        ch.agent_forward(false).await.map_err(lost)?;
    }
    for (k, v) in env {
        tracing::debug!("sending environment variable {k}");
        ch.set_env(false, k, v).await.map_err(lost)?;
    }
    let on_tty = terminal::stdin_is_tty();
    let pty = match tty {
        Tty::Auto => command.is_empty() && on_tty,
        Tty::Want if !on_tty => {
            eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
            false
        }
        Tty::Want | Tty::Force => true,
        Tty::No => false,
    };
    if pty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let (cols, rows, px, py) = terminal::size();
        ch.request_pty(false, &term, cols, rows, px, py, &[])
            .await
            .map_err(lost)?;
    }
    if command.is_empty() {
        ch.request_shell(true).await.map_err(lost)?;
    } else {
        // As ssh(1): the words are joined with spaces and the remote shell parses them.
        ch.exec(true, command.join(" ")).await.map_err(lost)?;
    }
    let raw = if pty && on_tty {
        RawMode::enter()
    } else {
        None
    };
    let (mut rd, wr) = ch.split();
    let wr = Arc::new(wr);
    let pump = {
        let wr = wr.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = wr.eof().await;
                        break;
                    }
                    Ok(n) => {
                        if wr.data_bytes(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    let ended = loop {
        tokio::select! {
            msg = rd.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if stdout.write_all(&data).await.is_err() {
                        break Ended::Lost("stdout closed".into());
                    }
                    let _ = stdout.flush().await;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let _ = stderr.write_all(&data).await;
                    let _ = stderr.flush().await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(Ended::Exit(exit_status)),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    status = Some(Ended::Signal(format!("{signal_name:?}")))
                }
                Some(ChannelMsg::Close) | None => {
                    break status.take().unwrap_or_else(|| {
                        Ended::Lost("the server closed the session without an exit status".into())
                    })
                }
                Some(_) => {}
            },
            Some(()) = async { winch.as_mut()?.recv().await } => {
                let (c, r, x, y) = terminal::size();
                let _ = wr.window_change(c, r, x, y).await;
            }
            Some(()) = async { term.as_mut()?.recv().await } => break Ended::Interrupted,
            Some(()) = async { hup.as_mut()?.recv().await } => break Ended::Interrupted,
        }
    };
    pump.abort();
    drop(raw);
    if pty && on_tty && matches!(ended, Ended::Exit(_)) {
        eprintln!("Connection to {host} closed.");
    }
    Ok(ended)
}

/// `-N`: no session, only the forwards, until the connection ends or a signal.
pub async fn wait_closed(handle: &Arc<Handle<Client>>) -> Ended {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {
                if handle.is_closed() {
                    return Ended::Lost("the server closed the connection".into());
                }
            }
            _ = tokio::signal::ctrl_c() => return Ended::Interrupted,
            Some(()) = async { term.as_mut()?.recv().await } => return Ended::Interrupted,
            Some(()) = async { hup.as_mut()?.recv().await } => return Ended::Interrupted,
        }
    }
}
