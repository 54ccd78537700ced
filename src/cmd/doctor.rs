//! `vmux doctor`: checks the workstation's setup (and a signer on this machine) and,
//! for each problem, says what is wrong and the command that fixes it. Exit status 0
//! when all is well, 1 otherwise. It only reads: files, status files, sockets.

use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmux_agent::status::Status;
use vmux_agent::AgentHome;
use vmux_proto::now_unix;

#[derive(Args)]
pub struct DoctorArgs {
    /// Machine-readable output: {"ok": bool, "checks": [{check, status, message, fix}]}.
    #[arg(long)]
    json: bool,
}

/// sshd's default `MaxAuthTries`.
const MAX_AUTH_TRIES: usize = 6;
/// A request is valid for 60 s: a skew this large makes requests fail or nearly so.
const SKEW_PROBLEM_SECS: i64 = 30;
const SKEW_NOTE_SECS: i64 = 5;

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Note,
    Problem,
}

#[derive(Serialize)]
struct Finding {
    check: &'static str,
    status: Level,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, check: &'static str, message: impl Into<String>) {
        self.push(check, Level::Ok, message, None);
    }
    fn note(&mut self, check: &'static str, message: impl Into<String>, fix: Option<String>) {
        self.push(check, Level::Note, message, fix);
    }
    fn problem(&mut self, check: &'static str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Level::Problem, message, Some(fix.into()));
    }
    fn push(
        &mut self,
        check: &'static str,
        status: Level,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Finding {
            check,
            status,
            message: message.into(),
            fix,
        });
    }
}

/// Whether something accepts connections on the Unix socket at `path`.
async fn answers(path: &Path) -> bool {
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::UnixStream::connect(path),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn ago(t: u64) -> String {
    let d = now_unix().saturating_sub(t);
    let span = match d {
        0..=119 => format!("{d} s"),
        120..=7199 => format!("{} min", d / 60),
        _ => format!("{} h", d / 3600),
    };
    format!("{} ({span} ago)", super::local_time(t))
}

fn local_user() -> String {
    // SAFETY: getpwuid_r writes into our buffer; the result points into it.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0u8; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        ) == 0
            && !out.is_null()
        {
            return std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_default()
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    let home = super::agent::home();
    check(&home, &mut r).await;
    let ok = !r.0.iter().any(|f| f.status == Level::Problem);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "checks": r.0}))?
        );
    } else {
        for f in &r.0 {
            let tag = match f.status {
                Level::Ok => "ok     ",
                Level::Note => "note   ",
                Level::Problem => "PROBLEM",
            };
            println!("{tag}  {}", f.message);
            if let Some(fix) = &f.fix {
                println!("         fix: {fix}");
            }
        }
        let n = r.0.iter().filter(|f| f.status == Level::Problem).count();
        if ok {
            println!("all is well");
        } else {
            println!("{n} problem{} found", if n == 1 { "" } else { "s" });
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn check(home: &AgentHome, r: &mut Report) {
    let config = match home.load_config() {
        Ok(c) => c,
        Err(e) => {
            r.problem(
                "agent-config",
                format!("the agent's config cannot be read: {e}"),
                format!("fix or remove {}", home.config().display()),
            );
            Default::default()
        }
    };
    let status: Option<Status> = vmux_proto::store::read_json(&home.status_file())
        .ok()
        .flatten();
    let configured = home.socket(&config);
    let socket = status
        .as_ref()
        .map(|s| PathBuf::from(&s.socket))
        .unwrap_or_else(|| configured.clone());
    let running = answers(&socket).await;
    let start = "vmux agent run   (or at login: vmux agent install-service, then \
                 systemctl --user enable --now vmux-agent.socket)";

    // The agent.
    match (&status, running) {
        (Some(s), true) => r.ok(
            "agent",
            format!("agent running (pid {}) on {}", s.pid, socket.display()),
        ),
        (None, true) => r.ok(
            "agent",
            format!("agent socket {} answers (socket-activated)", socket.display()),
        ),
        (Some(s), false) => r.problem(
            "agent",
            format!(
                "the agent is not running (its status file says pid {} served {}, but nothing answers there)",
                s.pid,
                socket.display()
            ),
            start,
        ),
        (None, false) => r.problem("agent", "the agent is not running", start),
    }
    for p in [socket.clone(), configured.clone()] {
        if !running && is_socket(&p) && !answers(&p).await {
            r.problem(
                "stale-socket",
                format!(
                    "{} is a stale socket file (nothing listens there)",
                    p.display()
                ),
                format!("rm {}", super::agent::shell_quote(&p)),
            );
        }
        if p == configured {
            break;
        }
    }

    // SSH_AUTH_SOCK.
    let export = format!(
        "export SSH_AUTH_SOCK={}   (or eval \"$(vmux agent env)\"; put it in your shell profile)",
        super::agent::shell_quote(&socket)
    );
    match std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()) {
        None => r.problem(
            "ssh-auth-sock",
            "SSH_AUTH_SOCK is not set: ssh, git and ssh-add do not use vmux",
            export,
        ),
        Some(v) => {
            let v = PathBuf::from(v);
            if same_file(&v, &socket) {
                r.ok(
                    "ssh-auth-sock",
                    format!("SSH_AUTH_SOCK is vmux's socket ({})", v.display()),
                );
            } else if answers(&v).await {
                r.problem(
                    "ssh-auth-sock",
                    format!(
                        "SSH_AUTH_SOCK points at another agent ({}), not vmux ({})",
                        v.display(),
                        socket.display()
                    ),
                    export,
                );
            } else {
                r.problem(
                    "ssh-auth-sock",
                    format!(
                        "SSH_AUTH_SOCK points at {}, where no agent answers (vmux's is {})",
                        v.display(),
                        socket.display()
                    ),
                    export,
                );
            }
        }
    }

    // IdentityAgent lines that take ssh elsewhere.
    let user_config = super::ssh_config::user_config();
    let mut found = vec![];
    for root in [user_config.clone(), PathBuf::from("/etc/ssh/ssh_config")] {
        identity_agents(&root, None, 0, &mut found);
    }
    let mut overriding = 0;
    for ia in &found {
        let value = expand_value(&ia.value);
        let fine = matches!(
            ia.value.as_str(),
            "SSH_AUTH_SOCK" | "$SSH_AUTH_SOCK" | "${SSH_AUTH_SOCK}"
        ) || same_file(Path::new(&value), &socket);
        if fine {
            continue;
        }
        overriding += 1;
        let scope = match &ia.host {
            Some(h) => format!("for {h}"),
            None => "for every host".into(),
        };
        let what = if ia.value.eq_ignore_ascii_case("none") {
            "turns the agent off".to_string()
        } else {
            format!("sends ssh to {value} instead of SSH_AUTH_SOCK")
        };
        r.problem(
            "identity-agent",
            format!(
                "{}:{}: `IdentityAgent {}` ({scope}) {what}: ssh there does not use vmux",
                ia.file.display(),
                ia.line,
                ia.value
            ),
            format!(
                "edit line {} of {}: remove it, or write `IdentityAgent {}`",
                ia.line,
                ia.file.display(),
                socket.display()
            ),
        );
    }
    if overriding == 0 {
        r.ok(
            "identity-agent",
            format!(
                "no IdentityAgent in {} overrides SSH_AUTH_SOCK",
                user_config.display()
            ),
        );
    }

    // Paired signers, links, clocks.
    let signers = home.load_signers().unwrap_or_default();
    if signers.is_empty() {
        r.problem(
            "paired-signer",
            "no paired signer",
            "on the signer: vmux signer run; here: vmux agent pair HOST:PORT (or vmux up on one machine)",
        );
    }
    for s in &signers {
        let link = status
            .as_ref()
            .filter(|_| running)
            .and_then(|st| st.signers.iter().find(|x| x.id == s.id));
        let name = format!("signer {:?} ({}) at {}", s.name, s.id, s.address);
        match link {
            Some(l) if l.connected => r.ok(
                "link",
                format!(
                    "{name}: connected{}",
                    l.since
                        .map(|t| format!(" since {}", ago(t)))
                        .unwrap_or_default()
                ),
            ),
            Some(l) => r.problem(
                "link",
                format!(
                    "{name}: link down{}{}",
                    l.since
                        .map(|t| format!(" since {}", ago(t)))
                        .unwrap_or_default(),
                    l.last_error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
                format!(
                    "start the signer there (vmux signer run), or give its address: \
                     vmux agent run --signer {}=HOST:PORT",
                    s.id
                ),
            ),
            None if running => {}
            None => {}
        }
        if let Some(skew) = link.and_then(|l| l.clock_skew_secs) {
            let (ahead, by) = if skew > 0 {
                ("ahead of", skew)
            } else {
                ("behind", -skew)
            };
            let msg = format!(
                "{name}: its clock is {by} s {ahead} this machine's (requests are valid for 60 s)"
            );
            let fix = "set the clock right on the device that is wrong: timedatectl set-ntp true \
                       (compare `date -u` on both)"
                .to_string();
            if by >= SKEW_PROBLEM_SECS {
                r.problem("clock", msg, fix);
            } else if by >= SKEW_NOTE_SECS {
                r.note("clock", msg, Some(fix));
            } else {
                r.ok("clock", format!("{name}: clocks agree (skew {skew} s)"));
            }
        }
    }

    // The session certificate.
    if let Some(st) = status.as_ref().filter(|_| running) {
        let now = now_unix();
        match st.certificate.as_ref().filter(|c| c.valid_before > now) {
            Some(c) => {
                let user = local_user();
                if !c.principals.contains(&user) {
                    r.problem(
                        "certificate",
                        format!(
                            "the session certificate's principals ({}) do not include you ({user}): \
                             servers refuse it for logins as {user}",
                            c.principals.join(",")
                        ),
                        format!(
                            "on the signer: vmux signer ca policy --principals {user},…; \
                             then here: vmux agent request-cert"
                        ),
                    );
                } else {
                    r.ok(
                        "certificate",
                        format!(
                            "session certificate valid until {} for {}",
                            super::local_time(c.valid_before),
                            c.principals.join(",")
                        ),
                    );
                }
                if c.valid_before - now < 600 {
                    r.note(
                        "certificate",
                        format!(
                            "the session certificate expires in {} s",
                            c.valid_before - now
                        ),
                        Some("vmux agent request-cert".into()),
                    );
                }
            }
            None if st.certificate_expired || st.certificate.is_some() => r.problem(
                "certificate",
                match &st.certificate {
                    Some(c) => format!(
                        "the session certificate expired at {}",
                        super::local_time(c.valid_before)
                    ),
                    None => "the session certificate expired and was not renewed".into(),
                },
                "vmux agent request-cert   (and approve it on the signer)",
            ),
            None if config.session_certs => r.note(
                "certificate",
                "no session certificate (logins ask the signer each time)",
                Some("vmux agent request-cert".into()),
            ),
            None => {}
        }
    }

    // Keys.
    let keys = home.load_keys().unwrap_or_default();
    let enabled = keys.iter().filter(|k| k.record.enabled).count();
    let offered = enabled + usize::from(status.as_ref().is_some_and(|s| s.certificate.is_some()));
    if !signers.is_empty() && enabled == 0 {
        r.problem(
            "keys",
            "the agent lists no keys",
            "on the signer: vmux signer keys add; here: vmux agent refresh",
        );
    } else if offered > MAX_AUTH_TRIES {
        r.problem(
            "keys",
            format!(
                "the agent offers {offered} keys, more than sshd's default MaxAuthTries \
                 ({MAX_AUTH_TRIES}): servers may end with \"Too many authentication failures\""
            ),
            "vmux ssh-config HOST --key FINGERPRINT --write   (for each host: offer it only its key)",
        );
    } else if enabled > 0 {
        r.ok(
            "keys",
            format!(
                "the agent offers {offered} key{}",
                if offered == 1 { "" } else { "s" }
            ),
        );
    }
    if !signers.is_empty() {
        r.note(
            "trusted-user-ca",
            "servers that trust the signer's CA take the session certificate (one approval per \
             certificate, not per login)",
            Some(
                "on the signer: vmux signer ca pub, into the server's sshd_config as \
                 TrustedUserCAKeys FILE"
                    .into(),
            ),
        );
    }

    signer_here(r).await;
}

/// A signer on this machine (same state directory): running, and its hardware keys
/// reachable.
async fn signer_here(r: &mut Report) {
    let home = super::signer::home();
    if !home.exists() {
        return;
    }
    let control = home.control_socket();
    if answers(&control).await {
        r.ok(
            "signer",
            format!("signer running here (control socket {})", control.display()),
        );
    } else {
        r.problem(
            "signer",
            "the signer on this machine is not running",
            "vmux signer run   (or vmux up; at login: vmux signer install-service)",
        );
        if is_socket(&control) {
            r.problem(
                "stale-socket",
                format!("{} is a stale socket file", control.display()),
                format!("rm {}", super::agent::shell_quote(&control)),
            );
        }
    }
    let config = home.load_config().ok();
    let files: Vec<PathBuf> = std::fs::read_dir(home.keys())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let tpm_keys = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tpm"))
        .count();
    #[cfg(not(feature = "tpm"))]
    if tpm_keys > 0 {
        let _ = &config;
        r.problem(
            "tpm",
            format!("{tpm_keys} key(s) live in a TPM, and this vmux is built without TPM support"),
            "install the package (scripts/package), or cargo install --path . --features tpm",
        );
    }
    #[cfg(feature = "tpm")]
    if tpm_keys > 0 {
        let tcti =
            vmux_signer::keystore::tpm::tcti(config.as_ref().and_then(|c| c.tcti.as_deref()));
        match tcti_reachable(&tcti) {
            Ok(()) => r.ok("tpm", format!("TPM {tcti} reachable ({tpm_keys} key(s))")),
            Err(e) => r.problem(
                "tpm",
                format!("{tpm_keys} key(s) live in the TPM {tcti}, which is not reachable: {e}"),
                "check the TPM (ls -l /dev/tpmrm0; the user needs the tss group) or `tcti` in \
                 the signer's config.toml",
            ),
        }
    }
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pkcs11"))
    {
        let d = vmux_signer::keystore::pkcs11::describe(f);
        if d.contains("not present") || d.contains("unreadable") {
            r.problem(
                "token",
                format!("{}: {d}", f.display()),
                "insert the token (or fix the module path); `vmux signer keys list` shows the slot",
            );
        } else {
            r.ok("token", d);
        }
    }
}

/// Whether the TPM behind a TCTI string answers: its device opens, or its TCP port
/// accepts (swtpm, mssim). Other TCTIs are taken as reachable.
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
fn tcti_reachable(tcti: &str) -> Result<(), String> {
    let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    match kind {
        "device" => {
            let path = if conf.is_empty() { "/dev/tpmrm0" } else { conf };
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(|_| ())
                .map_err(|e| format!("{path}: {e}"))
        }
        "swtpm" | "mssim" => {
            let mut host = "127.0.0.1".to_string();
            let mut port = 2321u16;
            for kv in conf.split(',') {
                match kv.split_once('=') {
                    Some(("host", h)) => host = h.to_string(),
                    Some(("port", p)) => port = p.parse().unwrap_or(port),
                    _ => {}
                }
            }
            let addr = format!("{host}:{port}");
            use std::net::ToSocketAddrs;
            let sa = addr
                .to_socket_addrs()
                .map_err(|e| format!("{addr}: {e}"))?
                .next()
                .ok_or_else(|| format!("{addr}: no address"))?;
            std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| format!("{addr}: {e}"))
        }
        _ => Ok(()),
    }
}

/// One `IdentityAgent` line of an ssh config file.
struct IdentityAgentLine {
    file: PathBuf,
    line: usize,
    host: Option<String>,
    value: String,
}

/// Collect the `IdentityAgent` lines of `file` and the files it includes, with the
/// `Host`/`Match` line each falls under (`None`: every host).
fn identity_agents(
    file: &Path,
    host: Option<&str>,
    depth: usize,
    out: &mut Vec<IdentityAgentLine>,
) {
    if depth > 16 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let mut current: Option<String> = host.map(String::from);
    for (i, raw) in text.lines().enumerate() {
        let Some((key, value)) = keyword(raw) else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "host" | "match" => {
                current = if key.eq_ignore_ascii_case("host") && value.trim() == "*" {
                    None
                } else {
                    Some(format!("{key} {value}"))
                };
            }
            "include" => {
                for pattern in value.split_whitespace() {
                    let p = expand_value(pattern.trim_matches('"'));
                    let p = if Path::new(&p).is_absolute() {
                        PathBuf::from(p)
                    } else if file.starts_with("/etc/ssh") {
                        Path::new("/etc/ssh").join(p)
                    } else {
                        vmux_proto::store::home_dir().join(".ssh").join(p)
                    };
                    for f in glob_files(&p) {
                        identity_agents(&f, current.as_deref(), depth + 1, out);
                    }
                }
            }
            "identityagent" => out.push(IdentityAgentLine {
                file: file.to_path_buf(),
                line: i + 1,
                host: current.clone(),
                value: value.trim().trim_matches('"').to_string(),
            }),
            _ => {}
        }
    }
}

/// `Keyword value` or `Keyword=value`; None for blank lines and comments.
fn keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let (k, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((k, rest))
}

/// A file path with a `*`/`?` in its last component: the matching files, sorted.
fn glob_files(p: &Path) -> Vec<PathBuf> {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![p.to_path_buf()];
    }
    let Some(dir) = p.parent() else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| vmux_signer::state::glob(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `~`, `%d` (home) and `${VAR}` as ssh expands them in paths.
fn expand_value(v: &str) -> String {
    let home = vmux_proto::store::home_dir().display().to_string();
    let mut s = match v.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None => v.to_string(),
    };
    s = s.replace("%d", &home);
    while let Some(start) = s.find("${") {
        let Some(len) = s[start..].find('}') else {
            break;
        };
        let var = &s[start + 2..start + len];
        let val = std::env::var(var).unwrap_or_default();
        s.replace_range(start..start + len + 1, &val);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_with_spaces_or_equals() {
        assert_eq!(keyword("  IdentityAgent /x"), Some(("IdentityAgent", "/x")));
        assert_eq!(keyword("IdentityAgent=/x"), Some(("IdentityAgent", "/x")));
        assert_eq!(
            keyword("IdentityAgent = \"/a b\""),
            Some(("IdentityAgent", "\"/a b\""))
        );
        assert_eq!(keyword("# c"), None);
        assert_eq!(keyword(""), None);
    }

    #[test]
    fn identity_agent_lines_name_their_host_and_line() {
        let dir = tempfile_dir();
        let inc = dir.join("inc");
        std::fs::write(&inc, "IdentityAgent /inc.sock\n").unwrap();
        let main = dir.join("config");
        std::fs::write(
            &main,
            format!(
                "Include {}\nHost *\n  IdentityAgent SSH_AUTH_SOCK\nHost work\n  IdentityAgent ~/work.sock\n",
                inc.display()
            ),
        )
        .unwrap();
        let mut out = vec![];
        identity_agents(&main, None, 0, &mut out);
        let got: Vec<(usize, Option<String>, String)> =
            out.into_iter().map(|l| (l.line, l.host, l.value)).collect();
        assert_eq!(
            got,
            vec![
                (1, None, "/inc.sock".into()),
                (3, None, "SSH_AUTH_SOCK".into()),
                (5, Some("Host work".into()), "~/work.sock".into()),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmux-doctor-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tcti_probe_fails_for_a_closed_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(tcti_reachable(&format!("swtpm:host=127.0.0.1,port={port}")).is_err());
        assert!(tcti_reachable("device:/nonexistent/tpm").is_err());
    }
}
