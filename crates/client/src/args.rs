//! ssh(1)'s command line, read as ssh reads it (getopt with OpenSSH's option string),
//! before `vmux ssh`'s argument parser sees it: options may follow the destination
//! (ssh parses options again after the host, up to the first word of the command);
//! every option ssh knows is either taken, turned into the `-o` option it stands for
//! (so `-C` is named like `Compression`, `-f` refused like `ForkAfterAuthentication`),
//! or refused with its name; an option ssh does not know is an error, as in ssh.

/// Why the command line was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// An error, said as ssh says it (`unknown option -- z`).
    Bad(String),
    /// `-V`: print the version.
    Version,
}

/// ssh's options that take an argument.
const WITH_ARG: &str = vmux_proto::ssh_config::GETOPT_WITH_ARG;
/// ssh's options without one.
const FLAGS: &str = "146AaCfGgKkMNnqsTtVvXxYy";
/// Of those, the ones `vmux ssh`'s parser takes as they are.
const OURS: &str = "pLloRDJiFNTtvAaq";
/// `vmux ssh`'s long options that take a value.
const LONG_WITH_ARG: &[&str] = &["signer", "cert-validity"];

/// The arguments after `ssh`, rewritten for `vmux ssh`'s parser: options first (ours
/// as given, the others as `-o Key=Value`), then `--`, the destination and the command.
pub fn normalize(args: &[String]) -> Result<Vec<String>, ArgError> {
    let mut out = vec![];
    let mut positional = vec![];
    let mut i = 0;
    let mut terminated = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if terminated || !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            if positional.len() == 1 && !terminated {
                // After the destination, options once more (ssh's second getopt pass),
                // up to the first word of the command.
                continue;
            }
            // The first word of the command: the rest belongs to it.
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if a == "--" {
            terminated = true;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or("");
            out.push(a.clone());
            if LONG_WITH_ARG.contains(&name) && !long.contains('=') {
                let v = args.get(i).ok_or_else(|| {
                    ArgError::Bad(format!("option --{name} requires an argument"))
                })?;
                out.push(v.clone());
                i += 1;
            }
            continue;
        }
        let cluster = &a[1..];
        for (j, c) in cluster.char_indices() {
            if WITH_ARG.contains(c) {
                let rest = &cluster[j + c.len_utf8()..];
                let value = if rest.is_empty() {
                    let v = args.get(i).ok_or_else(|| {
                        ArgError::Bad(format!("option requires an argument -- {c}"))
                    })?;
                    i += 1;
                    v.clone()
                } else {
                    rest.to_string()
                };
                with_arg(c, value, &mut out)?;
                break;
            }
            if !FLAGS.contains(c) {
                return Err(ArgError::Bad(format!("unknown option -- {c}")));
            }
            flag(c, &mut out)?;
        }
    }
    out.push("--".into());
    out.extend(positional);
    Ok(out)
}

fn option(out: &mut Vec<String>, o: &str) {
    out.push("-o".into());
    out.push(o.into());
}

fn flag(c: char, out: &mut Vec<String>) -> Result<(), ArgError> {
    if OURS.contains(c) {
        out.push(format!("-{c}"));
        return Ok(());
    }
    match c {
        'V' => return Err(ArgError::Version),
        '4' => option(out, "AddressFamily=inet"),
        '6' => option(out, "AddressFamily=inet6"),
        'C' => option(out, "Compression=yes"),
        'f' => option(out, "ForkAfterAuthentication=yes"),
        'g' => option(out, "GatewayPorts=yes"),
        'K' => option(out, "GSSAPIAuthentication=yes"),
        'k' => option(out, "GSSAPIDelegateCredentials=no"),
        'M' => option(out, "ControlMaster=yes"),
        'n' => option(out, "StdinNull=yes"),
        'X' => option(out, "ForwardX11=yes"),
        'Y' => option(out, "ForwardX11Trusted=yes"),
        'x' => option(out, "ForwardX11=no"),
        's' => option(out, "SessionType=subsystem"),
        // Log to syslog: vmux ssh logs to stderr.
        'y' => {}
        'G' => return Err(unsupported('G', "printing the configuration")),
        _ => return Err(ArgError::Bad(format!("unknown option -- {c}"))),
    }
    Ok(())
}

fn with_arg(c: char, v: String, out: &mut Vec<String>) -> Result<(), ArgError> {
    if OURS.contains(c) {
        out.push(format!("-{c}"));
        out.push(v);
        return Ok(());
    }
    match c {
        'B' => option(out, &format!("BindInterface={v}")),
        'b' => option(out, &format!("BindAddress={v}")),
        'c' => option(out, &format!("Ciphers={v}")),
        'm' => option(out, &format!("MACs={v}")),
        'e' => option(out, &format!("EscapeChar={v}")),
        'I' => option(out, &format!("PKCS11Provider={v}")),
        'S' => option(out, &format!("ControlPath={v}")),
        'w' => option(out, "Tunnel=yes"),
        'E' => {
            return Err(unsupported(
                'E',
                "a log file (debug lines go to stderr with -v)",
            ))
        }
        'O' => {
            return Err(unsupported(
                'O',
                "control commands (vmux ssh shares no connections)",
            ))
        }
        'Q' => return Err(unsupported('Q', "queries")),
        'W' => return Err(unsupported('W', "stdio forwarding")),
        'P' => return Err(unsupported('P', "tags")),
        _ => return Err(ArgError::Bad(format!("unknown option -- {c}"))),
    }
    Ok(())
}

fn unsupported(c: char, what: &str) -> ArgError {
    ArgError::Bad(format!("-{c}: vmux ssh does not support {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(a: &[&str]) -> Result<Vec<String>, ArgError> {
        normalize(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_after_the_destination_are_options() {
        assert_eq!(
            n(&["-p2222", "host", "-v", "-A", "ls", "-l"]).unwrap(),
            ["-p", "2222", "-v", "-A", "--", "host", "ls", "-l"]
        );
        assert_eq!(
            n(&["-vvv", "-J", "j1,j2", "h"]).unwrap(),
            ["-v", "-v", "-v", "-J", "j1,j2", "--", "h"]
        );
        assert_eq!(n(&["--", "host", "-v"]).unwrap(), ["--", "host", "-v"]);
        assert_eq!(
            n(&["--signer", "1.2.3.4:7227", "h", "--cert"]).unwrap(),
            ["--signer", "1.2.3.4:7227", "--cert", "--", "h"]
        );
    }

    #[test]
    fn other_ssh_options_become_config_options_or_errors() {
        assert_eq!(
            n(&["-C", "-c", "aes128-ctr", "h"]).unwrap(),
            [
                "-o",
                "Compression=yes",
                "-o",
                "Ciphers=aes128-ctr",
                "--",
                "h"
            ]
        );
        assert_eq!(
            n(&["-Z", "h"]),
            Err(ArgError::Bad("unknown option -- Z".into()))
        );
        assert_eq!(
            n(&["h", "-p"]),
            Err(ArgError::Bad("option requires an argument -- p".into()))
        );
        assert!(matches!(n(&["-W", "x:1", "h"]), Err(ArgError::Bad(m)) if m.contains("stdio")));
        assert_eq!(n(&["-V"]), Err(ArgError::Version));
    }
}
