//! SOCKS for `-D` (a local SOCKS server whose connections go through the SSH
//! connection, as ssh(1)'s dynamic forwarding) and for `-R [bind:]port` (the same on
//! the server's side, the connections made here). SOCKS5 (RFC 1928, no authentication,
//! CONNECT) and SOCKS4/4a, as OpenSSH serves them.
//!
//! The requests come from whoever can reach the listening port: the parsers are pure,
//! bounded (a request is at most [`MAX_REQUEST`] bytes) and fuzzed
//! (`fuzz/fuzz_targets/socks.rs`).

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// No SOCKS greeting or request is longer (a 255-byte name, a 255-byte SOCKS4 user).
pub const MAX_REQUEST: usize = 1024;

/// Where a SOCKS client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Why a SOCKS exchange was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    #[error("not a SOCKS request (version byte {0})")]
    Version(u8),
    #[error("SOCKS client offers no method without authentication")]
    NoMethod,
    #[error("SOCKS command {0} is not supported (only CONNECT)")]
    Command(u8),
    #[error("SOCKS address type {0} is not supported")]
    AddressType(u8),
    #[error("SOCKS request: {0}")]
    Malformed(&'static str),
    #[error("SOCKS request longer than {MAX_REQUEST} bytes")]
    TooLong,
}

/// The outcome of reading what has arrived so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// More bytes are needed.
    More,
    /// Parsed, using this many bytes.
    Done(T, usize),
}

/// A SOCKS5 greeting: `05 n methods…`; done when "no authentication" (0) is offered.
pub fn greeting5(b: &[u8]) -> Result<Step<()>, SocksError> {
    let [ver, n, ..] = *b else {
        return Ok(Step::More);
    };
    if ver != 5 {
        return Err(SocksError::Version(ver));
    }
    let end = 2 + n as usize;
    let Some(methods) = b.get(2..end) else {
        return Ok(Step::More);
    };
    if !methods.contains(&0) {
        return Err(SocksError::NoMethod);
    }
    Ok(Step::Done((), end))
}

/// A SOCKS5 request: `05 cmd 00 atyp addr port`.
pub fn request5(b: &[u8]) -> Result<Step<Target>, SocksError> {
    let [ver, cmd, _rsv, atyp, ..] = *b else {
        return Ok(Step::More);
    };
    if ver != 5 {
        return Err(SocksError::Version(ver));
    }
    if cmd != 1 {
        return Err(SocksError::Command(cmd));
    }
    let (host, at) = match atyp {
        1 => match b.get(4..8) {
            Some(a) => (
                std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
                8,
            ),
            None => return Ok(Step::More),
        },
        3 => {
            let Some(&len) = b.get(4) else {
                return Ok(Step::More);
            };
            let Some(name) = b.get(5..5 + len as usize) else {
                return Ok(Step::More);
            };
            (name_of(name)?, 5 + len as usize)
        }
        4 => match b.get(4..20) {
            Some(a) => {
                let a: [u8; 16] = a.try_into().expect("16 bytes");
                (std::net::Ipv6Addr::from(a).to_string(), 20)
            }
            None => return Ok(Step::More),
        },
        other => return Err(SocksError::AddressType(other)),
    };
    let Some(p) = b.get(at..at + 2) else {
        return Ok(Step::More);
    };
    Ok(Step::Done(
        Target {
            host,
            port: u16::from_be_bytes([p[0], p[1]]),
        },
        at + 2,
    ))
}

/// A SOCKS4 or 4a request: `04 01 port ip user\0 [name\0]` (4a when ip is 0.0.0.x, x≠0).
pub fn request4(b: &[u8]) -> Result<Step<Target>, SocksError> {
    let Some(head) = b.get(..8) else {
        return Ok(Step::More);
    };
    if head[0] != 4 {
        return Err(SocksError::Version(head[0]));
    }
    if head[1] != 1 {
        return Err(SocksError::Command(head[1]));
    }
    let port = u16::from_be_bytes([head[2], head[3]]);
    let ip = [head[4], head[5], head[6], head[7]];
    let Some(user_end) = b[8..].iter().position(|&c| c == 0).map(|i| 8 + i) else {
        return if b.len() >= MAX_REQUEST {
            Err(SocksError::TooLong)
        } else {
            Ok(Step::More)
        };
    };
    if ip[..3] == [0, 0, 0] && ip[3] != 0 {
        let rest = &b[user_end + 1..];
        let Some(name_end) = rest.iter().position(|&c| c == 0) else {
            return if b.len() >= MAX_REQUEST {
                Err(SocksError::TooLong)
            } else {
                Ok(Step::More)
            };
        };
        return Ok(Step::Done(
            Target {
                host: name_of(&rest[..name_end])?,
                port,
            },
            user_end + 1 + name_end + 1,
        ));
    }
    Ok(Step::Done(
        Target {
            host: std::net::Ipv4Addr::from(ip).to_string(),
            port,
        },
        user_end + 1,
    ))
}

/// A host name as a client sent it: printable ASCII only, not empty.
fn name_of(b: &[u8]) -> Result<String, SocksError> {
    if b.is_empty() || b.len() > 255 || !b.iter().all(|c| c.is_ascii_graphic()) {
        return Err(SocksError::Malformed(
            "host name is empty or not printable ASCII",
        ));
    }
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// A SOCKS exchange in progress: which version answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Four,
    Five,
}

/// Read one SOCKS request from `s` (answering the SOCKS5 greeting), within 10 s.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(Version, Target), SocksError> {
    tokio::time::timeout(Duration::from_secs(10), accept_inner(s))
        .await
        .unwrap_or(Err(SocksError::Malformed("no request within 10 s")))
}

async fn accept_inner<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(Version, Target), SocksError> {
    let mut buf = Vec::with_capacity(64);
    let eof = SocksError::Malformed("the client closed the connection");
    read_more(s, &mut buf).await.map_err(|_| eof.clone())?;
    if buf[0] == 4 {
        loop {
            if let Step::Done(t, _) = request4(&buf)? {
                return Ok((Version::Four, t));
            }
            read_more(s, &mut buf).await.map_err(|_| eof.clone())?;
        }
    }
    let used = loop {
        match greeting5(&buf) {
            Ok(Step::Done((), n)) => break n,
            Ok(Step::More) => read_more(s, &mut buf).await.map_err(|_| eof.clone())?,
            Err(e) => {
                if e == SocksError::NoMethod {
                    let _ = s.write_all(&[5, 0xff]).await;
                }
                return Err(e);
            }
        }
    };
    s.write_all(&[5, 0])
        .await
        .map_err(|_| SocksError::Malformed("the client went away"))?;
    buf.drain(..used);
    loop {
        match request5(&buf) {
            Ok(Step::Done(t, _)) => return Ok((Version::Five, t)),
            Ok(Step::More) => read_more(s, &mut buf).await.map_err(|_| eof.clone())?,
            Err(e) => {
                // 7: command not supported, 8: address type not supported.
                let code = match e {
                    SocksError::Command(_) => 7,
                    SocksError::AddressType(_) => 8,
                    _ => 1,
                };
                let _ = s.write_all(&reply5(code)).await;
                return Err(e);
            }
        }
    }
}

async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<(), SocksError> {
    if buf.len() >= MAX_REQUEST {
        return Err(SocksError::TooLong);
    }
    let mut chunk = [0u8; 256];
    let want = chunk.len().min(MAX_REQUEST - buf.len());
    let n = s
        .read(&mut chunk[..want])
        .await
        .map_err(|_| SocksError::Malformed("read failed"))?;
    if n == 0 {
        return Err(SocksError::Malformed("the client closed the connection"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn reply5(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Tell the client whether its connection was made.
pub async fn answer<S: AsyncWrite + Unpin>(s: &mut S, v: Version, ok: bool) -> std::io::Result<()> {
    match v {
        // 0: succeeded, 5: connection refused.
        Version::Five => s.write_all(&reply5(if ok { 0 } else { 5 })).await,
        // 0x5a granted, 0x5b rejected.
        Version::Four => {
            s.write_all(&[0, if ok { 0x5a } else { 0x5b }, 0, 0, 0, 0, 0, 0])
                .await
        }
    }
}

/// `-D [bind_address:]port`: where the SOCKS server listens (loopback unless given, or
/// every address with `GatewayPorts yes`).
pub fn parse_bind(spec: &str, gateway_ports: bool) -> Result<(String, u16), crate::ClientError> {
    let bad = |why: &str| {
        crate::ClientError::Forward(format!("-D {spec:?}: {why}; expected [bind_address:]port"))
    };
    let (bind, port) = match spec.rsplit_once(':') {
        Some((b, p)) => (
            match b.trim_matches(['[', ']']) {
                "" | "*" => "0.0.0.0".to_string(),
                "localhost" => "127.0.0.1".to_string(),
                b => b.to_string(),
            },
            p,
        ),
        None if gateway_ports => ("0.0.0.0".to_string(), spec),
        None => ("127.0.0.1".to_string(), spec),
    };
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok((bind, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks5() {
        assert_eq!(greeting5(&[5]), Ok(Step::More));
        assert_eq!(greeting5(&[5, 2, 2, 0]), Ok(Step::Done((), 4)));
        assert_eq!(greeting5(&[5, 1, 2]), Err(SocksError::NoMethod));
        assert_eq!(greeting5(&[4, 1, 0]), Err(SocksError::Version(4)));
        let mut r = vec![5, 1, 0, 3, 9];
        r.extend_from_slice(b"localhost");
        assert_eq!(request5(&r), Ok(Step::More));
        r.extend_from_slice(&[0x1f, 0x90]);
        assert_eq!(
            request5(&r),
            Ok(Step::Done(
                Target {
                    host: "localhost".into(),
                    port: 8080
                },
                16
            ))
        );
        assert_eq!(
            request5(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
            Ok(Step::Done(
                Target {
                    host: "127.0.0.1".into(),
                    port: 80
                },
                10
            ))
        );
        assert_eq!(request5(&[5, 2, 0, 1]), Err(SocksError::Command(2)));
        assert_eq!(request5(&[5, 1, 0, 9]), Err(SocksError::AddressType(9)));
        assert!(request5(&[5, 1, 0, 3, 2, b'a', 0, 0, 80]).is_err());
    }

    #[test]
    fn socks4_and_4a() {
        let r = [4, 1, 0, 80, 10, 0, 0, 1, b'u', 0];
        assert_eq!(
            request4(&r),
            Ok(Step::Done(
                Target {
                    host: "10.0.0.1".into(),
                    port: 80
                },
                10
            ))
        );
        assert_eq!(request4(&r[..9]), Ok(Step::More));
        let mut a = vec![4, 1, 0, 22, 0, 0, 0, 1, 0];
        a.extend_from_slice(b"example.org\0");
        assert_eq!(
            request4(&a),
            Ok(Step::Done(
                Target {
                    host: "example.org".into(),
                    port: 22
                },
                a.len()
            ))
        );
        let mut long = vec![4, 1, 0, 1, 1, 2, 3, 4];
        long.resize(2000, b'x');
        assert_eq!(request4(&long), Err(SocksError::TooLong));
    }

    #[test]
    fn binds() {
        assert_eq!(
            parse_bind("1080", false).unwrap(),
            ("127.0.0.1".into(), 1080)
        );
        assert_eq!(parse_bind("1080", true).unwrap(), ("0.0.0.0".into(), 1080));
        assert_eq!(
            parse_bind("*:1080", false).unwrap(),
            ("0.0.0.0".into(), 1080)
        );
        assert_eq!(
            parse_bind("[::1]:1080", false).unwrap(),
            ("::1".into(), 1080)
        );
        assert!(parse_bind("x", false).is_err());
        assert!(parse_bind("0", false).is_err());
    }
}
