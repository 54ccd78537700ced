//! `-L [bind_address:]port:host:hostport`: a local listener whose connections go
//! through the SSH connection as `direct-tcpip` channels (RFC 4254 §7.2).

use crate::dial::Client;
use crate::ClientError;
use russh::client::Handle;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct LocalForward {
    pub bind: String,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
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

pub fn parse(spec: &str) -> Result<LocalForward, ClientError> {
    let bad = |why: &str| {
        ClientError::Forward(format!(
            "-L {spec:?}: {why}; expected [bind_address:]port:host:hostport"
        ))
    };
    let f = fields(spec);
    let (bind, rest) = match f.len() {
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

/// Listen and forward until the connection ends.
pub async fn start(
    handle: Arc<Handle<Client>>,
    f: LocalForward,
) -> Result<tokio::task::JoinHandle<()>, ClientError> {
    let listener = tokio::net::TcpListener::bind((f.bind.as_str(), f.port))
        .await
        .map_err(|e| {
            ClientError::Forward(format!(
                "cannot listen on {}:{} for -L: {e}",
                f.bind, f.port
            ))
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let (mut sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("-L {}: accept: {e}", f.port);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (handle, f) = (handle.clone(), f.clone());
            tokio::spawn(async move {
                let ch = handle
                    .channel_open_direct_tcpip(
                        f.host.clone(),
                        f.host_port.into(),
                        peer.ip().to_string(),
                        peer.port().into(),
                    )
                    .await;
                match ch {
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
        assert_eq!(parse("[::1]:8080:[fe80::1]:80").unwrap().host, "fe80::1");
        for bad in ["8080", "x:h:80", "8080:h:99999", "8080::80", "a:b:c:d:e"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
