//! Port forwarding, as ssh(1) does it:
//! - `-L [bind_address:]port:host:hostport`: a local listener whose connections go
//!   through the SSH connection as `direct-tcpip` channels (RFC 4254 §7.2);
//! - `-D [bind_address:]port`: the same with a SOCKS server choosing the destination;
//! - `-R [bind_address:]port:host:hostport`: the server listens (`tcpip-forward`,
//!   RFC 4254 §7.1) and each connection it accepts is made here to host:hostport;
//!   `-R [bind_address:]port` alone: a SOCKS server here for the server's side.

use crate::socks;
use crate::ClientError;
use russh::client::{Handle, Msg};
use russh::Channel;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq)]
pub struct LocalForward {
    pub bind: String,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

/// `-R`: where the server listens and what this side connects to (`None`: SOCKS).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteForward {
    /// The address the server binds (`localhost` unless given; `""` every address).
    pub bind: String,
    /// 0: the server picks one (and says which).
    pub port: u16,
    pub to: Option<(String, u16)>,
}

/// Split at colons that are not inside `[…]` (IPv6 addresses).
fn fields(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (vec![], String::new(), 0);
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        if c != '[' && c != ']' {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn no_unix_sockets(flag: &str, spec: &str) -> Result<(), ClientError> {
    if spec.contains('/') {
        return Err(ClientError::Forward(format!(
            "{flag} {spec:?}: Unix-domain socket forwarding is not supported by vmux ssh"
        )));
    }
    Ok(())
}

/// `-L` with a loopback default bind address.
pub fn parse(spec: &str) -> Result<LocalForward, ClientError> {
    parse_local(spec, false)
}

/// `-L`; `gateway_ports` (`GatewayPorts yes`) makes the default bind every address.
pub fn parse_local(spec: &str, gateway_ports: bool) -> Result<LocalForward, ClientError> {
    let bad = |why: &str| {
        ClientError::Forward(format!(
            "-L {spec:?}: {why}; expected [bind_address:]port:host:hostport"
        ))
    };
    no_unix_sockets("-L", spec)?;
    let f = fields(spec);
    let (bind, rest) = match f.len() {
        3 if gateway_ports => ("0.0.0.0".to_string(), &f[..]),
        3 => ("127.0.0.1".to_string(), &f[..]),
        4 => (
            match f[0].as_str() {
                "" | "*" => "0.0.0.0".to_string(),
                "localhost" => "127.0.0.1".to_string(),
                b => b.to_string(),
            },
            &f[1..],
        ),
        _ => return Err(bad("wrong number of fields")),
    };
    let port = rest[0].parse().map_err(|_| bad("bad local port"))?;
    let host_port = rest[2].parse().map_err(|_| bad("bad remote port"))?;
    if rest[1].is_empty() {
        return Err(bad("no host"));
    }
    Ok(LocalForward {
        bind,
        port,
        host: rest[1].clone(),
        host_port,
    })
}

/// `-R [bind_address:]port:host:hostport` or `-R [bind_address:]port` (SOCKS).
pub fn parse_remote(spec: &str) -> Result<RemoteForward, ClientError> {
    let bad = |why: &str| {
        ClientError::Forward(format!(
            "-R {spec:?}: {why}; expected [bind_address:]port:host:hostport or [bind_address:]port"
        ))
    };
    no_unix_sockets("-R", spec)?;
    let f = fields(spec);
    let (bind, rest) = match f.len() {
        1 | 3 => ("localhost".to_string(), &f[..]),
        2 | 4 => (
            match f[0].as_str() {
                "" | "*" => String::new(),
                b => b.to_string(),
            },
            &f[1..],
        ),
        _ => return Err(bad("wrong number of fields")),
    };
    let port = rest[0].parse().map_err(|_| bad("bad listen port"))?;
    let to = match rest {
        [_] => None,
        [_, host, hp] if !host.is_empty() => Some((
            host.clone(),
            hp.parse().map_err(|_| bad("bad target port"))?,
        )),
        _ => return Err(bad("no host")),
    };
    Ok(RemoteForward { bind, port, to })
}

/// Listen and forward until the connection ends.
pub async fn start<H: russh::client::Handler + 'static>(
    handle: Arc<Handle<H>>,
    f: LocalForward,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let listener = listen(&f.bind, f.port, "-L").await?;
    Ok(tokio::spawn(async move {
        loop {
            let Some((mut sock, peer)) = accept(&listener, "-L").await else {
                continue;
            };
            let (handle, f) = (handle.clone(), f.clone());
            tokio::spawn(async move {
                match open(&handle, &f.host, f.host_port, peer).await {
                    Ok(ch) => {
                        let mut stream = ch.into_stream();
                        let _ = tokio::io::copy_bidirectional(&mut sock, &mut stream).await;
                    }
                    Err(e) => eprintln!(
                        "vmux ssh: channel to {}:{} for -L {} refused by the server: {e}\r",
                        f.host, f.host_port, f.port
                    ),
                }
            });
        }
    }))
}

/// `-D`: a SOCKS server on `bind:port`; each request becomes a `direct-tcpip` channel.
pub async fn start_dynamic<H: russh::client::Handler + 'static>(
    handle: Arc<Handle<H>>,
    bind: String,
    port: u16,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let listener = listen(&bind, port, "-D").await?;
    Ok(tokio::spawn(async move {
        loop {
            let Some((mut sock, peer)) = accept(&listener, "-D").await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let (version, target) = match socks::accept(&mut sock).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("-D {port}: {peer}: {e}");
                        return;
                    }
                };
                tracing::debug!("-D {port}: {peer} asks for {}:{}", target.host, target.port);
                match open(&handle, &target.host, target.port, peer).await {
                    Ok(ch) => {
                        if socks::answer(&mut sock, version, true).await.is_ok() {
                            let mut stream = ch.into_stream();
                            let _ = tokio::io::copy_bidirectional(&mut sock, &mut stream).await;
                        }
                    }
                    Err(e) => {
                        let _ = socks::answer(&mut sock, version, false).await;
                        eprintln!(
                            "vmux ssh: channel to {}:{} for -D {port} refused by the server: {e}\r",
                            vmux_proto::text::field(&target.host),
                            target.port
                        );
                    }
                }
            });
        }
    }))
}

async fn listen(bind: &str, port: u16, flag: &str) -> Result<tokio::net::TcpListener, ClientError> {
    tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(|e| {
            ClientError::Forward(format!("cannot listen on {bind}:{port} for {flag}: {e}"))
        })
}

async fn accept(
    l: &tokio::net::TcpListener,
    flag: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l.accept().await {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!("{flag}: accept: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            None
        }
    }
}

async fn open<H: russh::client::Handler>(
    handle: &Handle<H>,
    host: &str,
    port: u16,
    peer: std::net::SocketAddr,
) -> Result<Channel<Msg>, russh::Error> {
    handle
        .channel_open_direct_tcpip(host, port.into(), peer.ip().to_string(), peer.port().into())
        .await
}

/// The `-R` forwards the server listens for, with the ports it listens on.
#[derive(Default)]
pub struct Remotes {
    active: Mutex<Vec<(u16, RemoteForward)>>,
}

impl Remotes {
    /// Ask the server to listen for each forward; a refusal is a warning (ssh's), or
    /// an error with `ExitOnForwardFailure`.
    pub async fn request<H: russh::client::Handler>(
        &self,
        handle: &Handle<H>,
        forwards: &[RemoteForward],
        exit_on_failure: bool,
    ) -> Result<(), ClientError> {
        for f in forwards {
            match handle.tcpip_forward(f.bind.clone(), f.port.into()).await {
                Ok(allocated) => {
                    let port = if f.port == 0 {
                        allocated as u16
                    } else {
                        f.port
                    };
                    if f.port == 0 {
                        let to = match &f.to {
                            Some((h, p)) => format!("{h}:{p}"),
                            None => "the SOCKS server here".into(),
                        };
                        eprintln!("Allocated port {port} for remote forward to {to}");
                    }
                    tracing::debug!("-R {}:{port} listening on the server", f.bind);
                    self.active.lock().unwrap().push((port, f.clone()));
                }
                Err(e) => {
                    let msg = format!("remote port forwarding failed for listen port {}", f.port);
                    if exit_on_failure {
                        return Err(ClientError::Forward(format!("Error: {msg} ({e})")));
                    }
                    eprintln!("Warning: {msg}");
                }
            }
        }
        Ok(())
    }

    /// Whether the server listens on `port` for one of our forwards.
    pub fn has(&self, port: u32) -> bool {
        self.active
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| u32::from(*p) == port)
    }

    /// A connection the server accepted on a forwarded port: made here (to the
    /// forward's target, or wherever its SOCKS request says). `false`: no such forward.
    pub fn connect(&self, port: u32, channel: Channel<Msg>) -> bool {
        let found = self
            .active
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| u32::from(*p) == port)
            .map(|(_, f)| f.clone());
        let Some(f) = found else {
            return false;
        };
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let (to, socks) = match f.to {
                Some(to) => (to, None),
                None => match socks::accept(&mut stream).await {
                    Ok((v, t)) => ((t.host, t.port), Some(v)),
                    Err(e) => {
                        tracing::debug!("-R {port}: {e}");
                        return;
                    }
                },
            };
            match tokio::net::TcpStream::connect((to.0.as_str(), to.1)).await {
                Ok(mut sock) => {
                    if let Some(v) = socks {
                        if socks::answer(&mut stream, v, true).await.is_err() {
                            return;
                        }
                    }
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut stream).await;
                }
                Err(e) => {
                    if let Some(v) = socks {
                        let _ = socks::answer(&mut stream, v, false).await;
                    }
                    eprintln!(
                        "vmux ssh: -R {port}: connect to {}:{} failed: {e}\r",
                        vmux_proto::text::field(&to.0),
                        to.1
                    );
                }
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            parse("8080:localhost:80").unwrap(),
            LocalForward {
                bind: "127.0.0.1".into(),
                port: 8080,
                host: "localhost".into(),
                host_port: 80
            }
        );
        assert_eq!(parse("*:8080:h:80").unwrap().bind, "0.0.0.0");
        assert_eq!(parse_local("8080:h:80", true).unwrap().bind, "0.0.0.0");
        assert_eq!(parse("[::1]:8080:[fe80::1]:80").unwrap().host, "fe80::1");
        for bad in [
            "8080",
            "x:h:80",
            "8080:h:99999",
            "8080::80",
            "a:b:c:d:e",
            "/tmp/s:h:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_specs() {
        assert_eq!(
            parse_remote("9000:127.0.0.1:80").unwrap(),
            RemoteForward {
                bind: "localhost".into(),
                port: 9000,
                to: Some(("127.0.0.1".into(), 80))
            }
        );
        assert_eq!(parse_remote("*:0:h:1").unwrap().bind, "");
        assert_eq!(parse_remote("1080").unwrap().to, None);
        assert_eq!(parse_remote("0.0.0.0:1080").unwrap().bind, "0.0.0.0");
        for bad in ["x", "1:h", "1::2", "/s:h:1", "1:h:x"] {
            assert!(parse_remote(bad).is_err(), "{bad}");
        }
    }
}
