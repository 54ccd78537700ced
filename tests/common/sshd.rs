//! A throwaway OpenSSH `sshd` on 127.0.0.1 for integration tests.
//!
//! Works as root (logs in as root; needs `/run/sshd`, created if missing) and
//! as an unprivileged user (can then only log in as that same user).

use std::fs;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::proc::{free_port, is_root, send_signal, SIGKILL, SIGSTOP};

pub const SSHD: &str = "/usr/sbin/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;

/// Options for [`Sshd::start_with`].
#[derive(Clone, Debug, Default)]
pub struct SshdOptions {
    /// Content of the authorized_keys file (may be empty).
    pub authorized_keys: String,
    /// If set, written to a file used as `TrustedUserCAKeys` (a CA public key line).
    pub trusted_user_ca_keys: Option<String>,
    /// Extra sshd_config lines. They are placed *before* the harness defaults
    /// (in sshd_config the first value of an option wins, so these override
    /// them); everything from the first `Match` line on goes to the end.
    pub extra_config: Vec<String>,
}

pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    log_path: PathBuf,
    out_path: PathBuf,
    host_key_pub: String,
}

impl Sshd {
    /// Start sshd accepting the given authorized_keys content.
    pub fn start(authorized_keys: &str) -> Sshd {
        Self::start_with(SshdOptions {
            authorized_keys: authorized_keys.to_string(),
            ..Default::default()
        })
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        if is_root() {
            ensure_privsep_dir();
        }
        let dir = tempfile::Builder::new()
            .prefix("vmux-sshd-")
            .tempdir()
            .expect("create sshd tempdir");
        let d = dir.path();

        let host_key = d.join("ssh_host_ed25519_key");
        let st = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "vmux-test-host",
                "-f",
            ])
            .arg(&host_key)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-keygen (is openssh-client installed?)");
        assert!(
            st.status.success(),
            "ssh-keygen for host key failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let host_key_pub = fs::read_to_string(host_key.with_extension("pub"))
            .expect("read host key .pub")
            .trim()
            .to_string();

        let ak = d.join("authorized_keys");
        fs::write(&ak, with_newline(&opts.authorized_keys)).expect("write authorized_keys");
        let ca = opts.trusted_user_ca_keys.as_ref().map(|c| {
            let p = d.join("trusted_user_ca_keys");
            fs::write(&p, with_newline(c)).expect("write TrustedUserCAKeys");
            p
        });

        let log_path = d.join("sshd.log");
        let out_path = d.join("sshd.out");
        let config_path = d.join("sshd_config");
        let user = current_user();

        let mut last_log = String::new();
        for _attempt in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = render_config(&opts, port, d, &host_key, &ak, ca.as_deref());
            fs::write(&config_path, config).expect("write sshd_config");
            let _ = fs::remove_file(&log_path);
            let out = fs::File::create(&out_path).expect("create sshd.out");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config_path)
                .arg("-E")
                .arg(&log_path)
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup sshd.out"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {SSHD} (is openssh-server installed?): {e}"));
            let ready = wait_ready(&mut child, port, &log_path, &out_path);
            let log = read_log(&log_path, &out_path);
            match ready {
                Ready::Up => {
                    return Sshd {
                        child,
                        dir,
                        port,
                        user,
                        log_path,
                        out_path,
                        host_key_pub,
                    }
                }
                Ready::PortClash => {
                    let _ = child.wait();
                    last_log = log;
                }
                Ready::Failed(why) => {
                    kill_tree(&mut child);
                    panic!("sshd did not come up: {why}\n--- sshd log ---\n{log}\n--- end ---");
                }
            }
        }
        panic!(
            "sshd could not bind a free port after {PORT_ATTEMPTS} attempts\n--- last sshd log ---\n{last_log}"
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user sshd lets in (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The public host key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_key_pub(&self) -> String {
        self.host_key_pub.clone()
    }

    /// A known_hosts line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let mut parts = self.host_key_pub.split_whitespace();
        let alg = parts.next().unwrap_or_default();
        let b64 = parts.next().unwrap_or_default();
        format!("[127.0.0.1]:{} {alg} {b64}", self.port)
    }

    /// sshd's log (`-E` file, plus anything it printed to stdout/stderr).
    pub fn log(&self) -> String {
        read_log(&self.log_path, &self.out_path)
    }

    /// Wait (bounded) until the log contains `needle`; returns whether it did.
    /// Useful because sshd writes "Accepted publickey" etc. asynchronously.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh` preconfigured to reach this server through the agent at
    /// `auth_sock`, ignoring host keys. Append the remote command (e.g. `true`).
    pub fn ssh_command(&self, auth_sock: &Path) -> Command {
        self.ssh_base(
            auth_sock,
            &[
                "StrictHostKeyChecking=no".to_string(),
                "UserKnownHostsFile=/dev/null".to_string(),
            ],
        )
    }

    /// Like [`Sshd::ssh_command`] but verifying the host key against
    /// `known_hosts` (`StrictHostKeyChecking=yes`). See [`Sshd::known_hosts_line`].
    pub fn ssh_command_known_hosts(&self, auth_sock: &Path, known_hosts: &Path) -> Command {
        self.ssh_base(
            auth_sock,
            &[
                "StrictHostKeyChecking=yes".to_string(),
                format!("UserKnownHostsFile={}", known_hosts.display()),
            ],
        )
    }

    fn ssh_base(&self, auth_sock: &Path, host_opts: &[String]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes"]);
        for o in host_opts {
            cmd.arg("-o").arg(o);
        }
        cmd.args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "IdentitiesOnly=no"])
            .arg("-o")
            .arg(format!("IdentityAgent={}", auth_sock.display()))
            .args(["-o", "PreferredAuthentications=publickey"])
            .args(["-o", "ConnectTimeout=10"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user))
            .env("SSH_AUTH_SOCK", auth_sock);
        cmd
    }
}

enum Ready {
    Up,
    PortClash,
    Failed(String),
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
        // `dir` (TempDir) is removed when the fields drop.
    }
}

fn read_log(log_path: &Path, out_path: &Path) -> String {
    let mut s = fs::read_to_string(log_path).unwrap_or_default();
    if let Ok(out) = fs::read_to_string(out_path) {
        if !out.trim().is_empty() {
            s.push_str("--- sshd stdout/stderr ---\n");
            s.push_str(&out);
        }
    }
    s
}

fn wait_ready(child: &mut Child, port: u16, log_path: &Path, out_path: &Path) -> Ready {
    let deadline = Instant::now() + START_TIMEOUT;
    let listening = format!("Server listening on 127.0.0.1 port {port}");
    loop {
        if let Some(st) = child.try_wait().expect("try_wait sshd") {
            if read_log(log_path, out_path).contains("Address already in use") {
                return Ready::PortClash;
            }
            return Ready::Failed(format!("sshd exited early with {st}"));
        }
        // Only trust the port once *our* sshd says it is listening, so a
        // foreign process that grabbed the port is not mistaken for it.
        if read_log(log_path, out_path).contains(&listening) {
            if let Ok(s) = TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(500),
            ) {
                let _ = s.shutdown(Shutdown::Both);
                return Ready::Up;
            }
        }
        if Instant::now() >= deadline {
            return Ready::Failed(format!(
                "port {port} not accepting connections after {START_TIMEOUT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kill sshd and everything it spawned, and reap it.
fn kill_tree(child: &mut Child) {
    let pid = child.id();
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // Per-connection sshd processes call setsid(), so a process-group kill
    // would miss them. Freeze the listener first so it cannot fork while we
    // walk its descendants (e.g. the child serving our readiness probe).
    send_signal(pid, SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !matches!(proc_state(pid), Some('T' | 't' | 'Z') | None) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..50 {
        let live: Vec<u32> = descendants(pid)
            .into_iter()
            .filter(|p| !matches!(proc_state(*p), Some('Z') | None))
            .collect();
        if live.is_empty() {
            break;
        }
        for p in live {
            send_signal(p, SIGKILL);
        }
        thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The state letter from /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// All descendants of `root` (breadth-first), from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ..." — comm may contain spaces/parens.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

fn render_config(
    opts: &SshdOptions,
    port: u16,
    dir: &Path,
    host_key: &Path,
    authorized_keys: &Path,
    ca: Option<&Path>,
) -> String {
    let split = opts
        .extra_config
        .iter()
        .position(|l| {
            l.trim_start()
                .get(..6)
                .is_some_and(|w| w.eq_ignore_ascii_case("match "))
        })
        .unwrap_or(opts.extra_config.len());
    let (head, tail) = opts.extra_config.split_at(split);

    let mut c = String::new();
    for l in head {
        c.push_str(l);
        c.push('\n');
    }
    c.push_str(&format!(
        "ListenAddress 127.0.0.1:{port}\n\
         AddressFamily inet\n\
         HostKey {hk}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {ak}\n\
         StrictModes no\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         MaxStartups 100\n\
         MaxAuthTries 20\n\
         LogLevel DEBUG1\n",
        hk = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        ak = authorized_keys.display(),
    ));
    if let Some(ca) = ca {
        c.push_str(&format!("TrustedUserCAKeys {}\n", ca.display()));
    }
    if supports_per_source_penalties() {
        // OpenSSH >= 9.8 would otherwise refuse 127.0.0.1 for a while after
        // tests that deliberately fail authentication.
        c.push_str("PerSourcePenalties no\n");
    }
    for l in tail {
        c.push_str(l);
        c.push('\n');
    }
    c
}

/// Whether this sshd understands `PerSourcePenalties` (OpenSSH >= 9.8).
fn supports_per_source_penalties() -> bool {
    static CACHE: OnceLock<bool> = OnceLock::new();
    *CACHE.get_or_init(|| {
        let Ok(dir) = tempfile::tempdir() else {
            return false;
        };
        let hk = dir.path().join("hk");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&hk)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return false;
        }
        let cfg = dir.path().join("cfg");
        let text = format!(
            "HostKey {}\nUsePAM no\nPerSourcePenalties no\n",
            hk.display()
        );
        if fs::write(&cfg, text).is_err() {
            return false;
        }
        Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// The privilege-separation directory sshd insists on when run as root.
fn ensure_privsep_dir() {
    let p = Path::new("/run/sshd");
    if !p.is_dir() {
        let _ = fs::create_dir_all(p);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
        }
    }
}

/// The current user name (`id -un`, falling back to $USER).
pub fn current_user() -> String {
    if let Ok(o) = Command::new("id").arg("-un").stdin(Stdio::null()).output() {
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !s.is_empty() {
            return s;
        }
    }
    std::env::var("USER").expect("cannot determine current user (id -un failed, $USER unset)")
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}
