//! `vmux ssh`: a real sshd on loopback, a real signer, the client paired as a device of
//! its own. Every login is approved on the signer as a person would, naming the request.

mod common;

use common::proc::{run, run_with_input, Daemon};
use common::sshd::{Sshd, SshdOptions};
use common::tmux::Tmux;
use common::vmux::{ok, pair_in, vmux, vmux_ssh, Signer, T};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct ClientSetup {
    tmp: tempfile::TempDir,
    signer: Signer,
    /// The client device's VMUX_HOME.
    home: PathBuf,
    /// Every signer key, one authorized_keys line each.
    keys: Vec<String>,
}

fn client_config(home: &Path, toml: &str) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home.join("client"))
        .unwrap();
    std::fs::write(
        home.join("client/config.toml"),
        format!("discovery = \"off\"\n{toml}"),
    )
    .unwrap();
}

impl ClientSetup {
    fn new() -> ClientSetup {
        ClientSetup::with(0, "")
    }

    /// `extra_keys` more signer keys beyond the first; `config` for the client.
    fn with(extra_keys: usize, config: &str) -> ClientSetup {
        let tmp = tempfile::tempdir().unwrap();
        let shome = tmp.path().join("signer-home");
        let home = tmp.path().join("client-home");
        client_config(&home, config);
        Signer::init(&shome, "pi-signer");
        for i in 0..extra_keys {
            ok(
                &shome,
                &[
                    "signer",
                    "keys",
                    "add",
                    "--type",
                    "ed25519",
                    "--comment",
                    &format!("extra-{i}"),
                ],
            );
        }
        let keys: Vec<String> = ok(&shome, &["signer", "keys", "pub"])
            .lines()
            .map(String::from)
            .collect();
        let signer = Signer::start(&shome, "127.0.0.1:0");
        pair_in(None, &home, &signer, &["client", "pair", &signer.addr]);
        ClientSetup {
            tmp,
            signer,
            home,
            keys,
        }
    }

    fn known_hosts(&self) -> PathBuf {
        self.tmp.path().join("known_hosts")
    }

    /// `vmux ssh` to `sshd` with the test's known_hosts (`accept-new` unless `-o` says).
    fn ssh(&self, sshd: &Sshd, args: &[&str]) -> Command {
        let mut c = vmux_ssh(&self.home, sshd, &self.known_hosts());
        c.env("HOME", self.tmp.path()).env("VMUX_LOG", "warn");
        if !args.iter().any(|a| a.starts_with("StrictHostKeyChecking")) {
            c.args(["-o", "StrictHostKeyChecking=accept-new"]);
        }
        c.args(args);
        c
    }

    /// Approve the one pending login after checking what the signer shows.
    fn approve_login(&self) -> serde_json::Value {
        let p = self.signer.wait_pending(1);
        assert_eq!(p.len(), 1, "{p:?}");
        self.signer.approve_next();
        p[0].clone()
    }
}

fn dest(sshd: &Sshd) -> String {
    format!("{}@127.0.0.1", sshd.user())
}

fn spawn(mut c: Command, input: &'static [u8]) -> std::thread::JoinHandle<common::proc::Output> {
    std::thread::spawn(move || run_with_input(&mut c, input, Duration::from_secs(90)))
}

#[test]
fn exit_status_after_one_approval_and_denial_is_permission_denied() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let d = dest(&sshd);
    let h = spawn(s.ssh(&sshd, &[&d, "exit 3"]), b"");
    let shown = s.approve_login();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.contains("waiting for signer pi-signer"),
        "{out:?}"
    );
    // What the person saw: a login from the client, for this user and host:port.
    let text = shown.to_string();
    assert_eq!(shown["origin"], "client", "{shown}");
    assert!(
        text.contains(&format!("{}@127.0.0.1:{}", sshd.user(), sshd.port())),
        "{text}"
    );
    assert!(text.contains("verified"), "{text}");

    let h = spawn(s.ssh(&sshd, &[&d, "true"]), b"");
    s.signer.wait_pending(1);
    s.signer.deny_next();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{out:?}"
    );
    assert!(
        s.signer.pending().is_empty(),
        "a denial must not ask again for another key"
    );
}

#[test]
fn second_login_is_verified_by_the_signer_and_survives_restarts() {
    let mut s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let d = dest(&sshd);
    let h = spawn(s.ssh(&sshd, &[&d, "true"]), b"");
    let first = s.approve_login();
    assert_eq!(h.join().unwrap().status.code(), Some(0));
    assert_eq!(first["destinationQuality"], "new", "{first}");
    // Day two: the signer restarts with the pin it made; the client's state is reused.
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home.clone(), &s.signer.addr.clone());
    let h = spawn(s.ssh(&sshd, &[&d, "true"]), b"");
    let second = s.approve_login();
    assert_eq!(h.join().unwrap().status.code(), Some(0));
    assert_eq!(second["destinationQuality"], "verified", "{second}");
    assert!(
        second.to_string().contains(&format!(
            "{}@127.0.0.1:{} (verified by this signer)",
            sshd.user(),
            sshd.port()
        )),
        "{second}"
    );
    assert!(s.signer.log().contains("\"origin\":\"client\"") || s.signer.log().contains("client"));
}

#[test]
fn stdin_and_stdout_are_piped() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "cat"]), b"hi\n");
    s.approve_login();
    let out = h.join().unwrap();
    assert_eq!(out.stdout, "hi\n", "{out:?}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn interactive_shell_in_a_terminal() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let cmd = s.ssh(&sshd, &[&dest(&sshd)]);
    let line = format!(
        "TERM=screen-256color {} ; echo CLIENT-EXIT=$? ; stty -a | grep -o '[-]icanon' ; echo DONE; sleep 60",
        shell_words(&cmd)
    );
    let tmux = Tmux::start(&line);
    s.approve_login();
    tmux.wait_for("~", 1);
    tmux.keys(&["echo TERM=$TERM; echo COLS=$(tput cols)", "Enter"]);
    let screen = tmux.wait_for("COLS=200", 1);
    assert!(screen.contains("TERM=screen-256color"), "{screen}");
    // The window changes size: SIGWINCH reaches the remote PTY.
    tmux.command(&["resize-window", "-t", "0", "-x", "150", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["echo COLS=$(tput cols) LINES=$(tput lines); exit", "Enter"]);
    let screen = tmux.wait_for("DONE", 1);
    assert!(screen.contains("COLS=150 LINES=40"), "{screen}");
    assert!(screen.contains("CLIENT-EXIT=0"), "{screen}");
    // The terminal is back in canonical mode (raw mode would show -icanon).
    assert!(!screen.contains("-icanon"), "terminal left raw: {screen}");
}

/// `cmd` as a shell line (env and arguments quoted).
fn shell_words(cmd: &Command) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut parts = vec![];
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                q(&v.to_string_lossy())
            ));
        }
    }
    parts.push(q(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| q(&a.to_string_lossy())));
    format!(
        "env -u SSH_AUTH_SOCK -u VMUX_PASSPHRASE {}",
        parts.join(" ")
    )
}

#[test]
fn local_port_forward_reaches_a_local_http_server() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in http.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello-vmux\r\n");
        }
    });
    let local = common::proc::free_port();
    let spec = format!("{local}:127.0.0.1:{http_port}");
    let mut fwd = Daemon::spawn_named(
        "vmux ssh -L",
        &mut s.ssh(&sshd, &["-N", "-L", &spec, &dest(&sshd)]),
    );
    s.approve_login();
    let deadline = Instant::now() + T;
    let body = loop {
        let out = run(
            Command::new("python3").args([
                "-c",
                &format!("import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{local}/',timeout=5).read().decode())"),
            ]),
            T,
        );
        if out.success() {
            break out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "forward never answered: {out:?} {}",
            fwd.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("hello-vmux"), "{body}");
    fwd.terminate(Duration::from_secs(5));
}

#[test]
fn host_keys_are_checked_as_openssh_does() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let d = dest(&sshd);
    // Unknown key with StrictHostKeyChecking=yes: refused before any signature.
    let out = run(
        &mut s.ssh(&sshd, &["-o", "StrictHostKeyChecking=yes", &d, "true"]),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("Host key verification failed"),
        "{out:?}"
    );
    assert!(s.signer.pending().is_empty());

    // `ask` (the default) in a terminal: the fingerprint is shown and answered.
    let cmd = s.ssh(
        &sshd,
        &["-o", "StrictHostKeyChecking=ask", &d, "echo", "ASKED-OK"],
    );
    let tmux = Tmux::start(&format!("{}; echo DONE; sleep 60", shell_words(&cmd)));
    let screen = tmux.wait_for("(yes/no/[fingerprint])?", 1);
    assert!(screen.contains("SHA256:"), "{screen}");
    tmux.keys(&["yes", "Enter"]);
    s.approve_login();
    let screen = tmux.wait_for("DONE", 1);
    assert!(screen.contains("ASKED-OK"), "{screen}");
    let kh = std::fs::read_to_string(s.known_hosts()).unwrap();
    assert!(kh.contains(&format!("[127.0.0.1]:{}", sshd.port())), "{kh}");

    // The server's key changes: refused with the warning, nothing asked of the signer.
    let other = Sshd::start(&s.keys.join("\n"));
    std::fs::write(
        s.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", other.port(), sshd.host_key_pub()),
    )
    .unwrap();
    let out = run(
        &mut s.ssh(
            &other,
            &[
                "-o",
                "StrictHostKeyChecking=accept-new",
                &dest(&other),
                "true",
            ],
        ),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("Host key verification failed"),
        "{out:?}"
    );
    assert!(s.signer.pending().is_empty());
}

#[test]
fn only_the_key_the_server_accepts_is_signed() {
    let s = ClientSetup::with(1, "");
    assert_eq!(s.keys.len(), 2, "{:?}", s.keys);
    // The server trusts only the second key: the first is offered (a query, no
    // signature) and refused; the signer sees exactly one request, for the second.
    let sshd = Sshd::start(&s.keys[1]);
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "echo", "second"]), b"");
    let p = s.signer.wait_pending(1);
    let second_fp = run(
        Command::new("sh").args([
            "-c",
            &format!("echo '{}' | ssh-keygen -lf - | cut -d' ' -f2", s.keys[1]),
        ]),
        T,
    )
    .stdout
    .trim()
    .to_string();
    assert!(
        p[0].to_string().contains(&second_fp),
        "{p:?} vs {second_fp}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.signer.pending().len(), 1);
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert_eq!(out.stdout.trim(), "second", "{out:?}");
    let log = s.signer.log();
    assert_eq!(log.matches("\"event\":\"sign\"").count(), 1, "{log}");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn no_signer_found_within_the_timeout() {
    let mut s = ClientSetup::with(0, "connect_timeout_secs = 3\n");
    let sshd = Sshd::start(&s.keys.join("\n"));
    s.signer.stop();
    let started = Instant::now();
    let out = run(&mut s.ssh(&sshd, &[&dest(&sshd), "true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains(
            "vmux: no signer found (is vmux signer run running, and is this device paired?)"
        ),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_unpaired_device_is_told_to_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        vmux(tmp.path()).args(["ssh", "-F", "none", "somebody@127.0.0.1", "true"]),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("vmux client pair"), "{out:?}");
}

#[test]
fn a_revoked_client_is_told_to_pair_again() {
    // The client is a device of its own on the signer: revoking it refuses the client.
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let devices = ok(&s.signer.home, &["signer", "devices"]);
    assert!(devices.contains("(vmux ssh)"), "{devices}");
    let id = devices.split_whitespace().next().unwrap();
    ok(&s.signer.home, &["signer", "devices", "revoke", id]);
    let out = run(&mut s.ssh(&sshd, &[&dest(&sshd), "true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("pair it again"), "{out:?}");
}

#[test]
fn a_dropped_connection_says_so_and_reconnect_asks_again() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    // The remote shell kills its own sshd: the connection drops under the session.
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "kill -9 $PPID; sleep 5"]), b"");
    s.approve_login();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("vmux: connection to 127.0.0.1 lost"),
        "{out:?}"
    );

    // --reconnect: each new connection is a new signature the person approves.
    let mut c = s.ssh(
        &sshd,
        &["--reconnect", &dest(&sshd), "kill -9 $PPID; sleep 5"],
    );
    let mut d = Daemon::spawn_named("vmux ssh --reconnect", &mut c);
    s.approve_login();
    d.wait_for_line(|l| l.contains("reconnecting in 1s"), T)
        .unwrap_or_else(|| panic!("no reconnect: {}", d.output()));
    s.approve_login();
    d.wait_for_line(|l| l.contains("reconnecting in 2s"), T)
        .unwrap_or_else(|| panic!("no second reconnect: {}", d.output()));
    assert!(s.signer.log().matches("\"event\":\"sign\"").count() >= 2);
    d.terminate(Duration::from_secs(5));
}

#[test]
fn a_session_certificate_for_this_process_is_approved_once() {
    let s = ClientSetup::new();
    let ca = ok(&s.signer.home, &["signer", "ca", "pub"]);
    // The server trusts only the signer's CA: no authorized key at all.
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: String::new(),
        trusted_user_ca_keys: Some(ca),
        extra_config: vec![],
    });
    let h = spawn(
        s.ssh(&sshd, &["--cert", &dest(&sshd), "echo", "by-cert"]),
        b"",
    );
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["kind"], "cert", "{p:?}");
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert_eq!(out.stdout.trim(), "by-cert", "{out:?}");
    assert!(
        sshd.log().contains("Accepted publickey") && sshd.log().contains("CA "),
        "{}",
        sshd.log()
    );
    // Nothing of it on disk: the client's state holds no private key.
    let files = run(
        Command::new("grep")
            .args(["-rl", "PRIVATE KEY"])
            .arg(&s.home),
        T,
    );
    assert!(files.stdout.is_empty(), "{files:?}");
}

#[test]
fn a_hostile_banner_cannot_drive_the_terminal() {
    let s = ClientSetup::new();
    let banner = s.tmp.path().join("banner");
    std::fs::write(&banner, "hello\x1b]0;owned\x07\x1b[2J\r\nline two\n").unwrap();
    let sshd = Sshd::start_with(SshdOptions {
        authorized_keys: s.keys.join("\n"),
        trusted_user_ca_keys: None,
        extra_config: vec![format!("Banner {}", banner.display())],
    });
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "true"]), b"");
    s.approve_login();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("hello"), "{out:?}");
    assert!(
        !out.stderr.contains('\x1b') && !out.stderr.contains('\x07'),
        "{out:?}"
    );
}

#[test]
fn the_server_going_away_while_the_person_decides() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "true"]), b"");
    s.signer.wait_pending(1);
    drop(sshd);
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("vmux: connection to 127.0.0.1 lost"),
        "{out:?}"
    );
}

#[test]
fn an_explicit_signer_route_reaches_a_signer_that_moved() {
    let mut s = ClientSetup::with(0, "connect_timeout_secs = 3\n");
    let sshd = Sshd::start(&s.keys.join("\n"));
    // Day two: the signer comes back on another port; the client's address is stale.
    s.signer.stop();
    s.signer = Signer::start(&s.signer.home.clone(), "127.0.0.1:0");
    let out = run(&mut s.ssh(&sshd, &[&dest(&sshd), "true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("no signer found"), "{out:?}");
    let route = s.signer.addr.clone();
    let h = spawn(
        s.ssh(&sshd, &["--signer", &route, &dest(&sshd), "echo", "routed"]),
        b"",
    );
    s.approve_login();
    assert_eq!(h.join().unwrap().stdout.trim(), "routed");
    // The route is kept as the address hint: the next run needs no flag.
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "echo", "again"]), b"");
    s.approve_login();
    assert_eq!(h.join().unwrap().stdout.trim(), "again");
}

/// A file in the test's directory.
fn write(s: &ClientSetup, name: &str, text: &str) -> PathBuf {
    let p = s.tmp.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `vmux ssh -F CONFIG ARGS` as a person runs it: HOME in the test's directory.
fn ssh_with_config(s: &ClientSetup, config: &Path, args: &[&str]) -> Command {
    let mut c = vmux(&s.home);
    c.env("HOME", s.tmp.path())
        .env("VMUX_LOG", "warn")
        .arg("ssh")
        .arg("-F")
        .arg(config)
        .args(args);
    c
}

/// The host-key lines every hop shares: the test's known_hosts, new keys accepted.
fn hosts_block(s: &ClientSetup) -> String {
    format!(
        "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking accept-new\n",
        s.known_hosts().display()
    )
}

#[test]
fn a_typo_in_the_ssh_config_is_an_error_with_its_line_not_a_connection() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    // `Prot 2213`: ssh refuses the file; vmux ssh did connect to port 22.
    let cfg = write(
        &s,
        "typo_config",
        &format!(
            "Host box\n  HostName 127.0.0.1\n  Prot 2213\n{}",
            hosts_block(&s)
        ),
    );
    let out = run(&mut ssh_with_config(&s, &cfg, &["box", "true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{}: line 3: Bad configuration option: prot",
            cfg.display()
        )),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("terminating, 1 bad configuration options"),
        "{out:?}"
    );
    // A known option that would change where the connection goes: refused, named.
    let cfg = write(
        &s,
        "proxy_config",
        &format!(
            "Host box\n  HostName 127.0.0.1\n  Port {}\n  ProxyCommand nc %h %p\n{}",
            sshd.port(),
            hosts_block(&s)
        ),
    );
    let out = run(&mut ssh_with_config(&s, &cfg, &["box", "true"]), T);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("line 4: proxycommand nc %h %p") && out.stderr.contains("ProxyJump"),
        "{out:?}"
    );
    // An unknown command-line option: ssh's message, not clap's advice about `--`.
    let out = run(
        vmux(&s.home).args(["ssh", "-F", "none", "box", "-Z", "true"]),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stderr.contains("unknown option -- Z"), "{out:?}");
    assert!(
        !out.stderr.contains("tip") && !out.stderr.contains("'--'"),
        "{out:?}"
    );
    let out = run(
        vmux(&s.home).args(["ssh", "-F", "none", "-o", "Prot=2213", "box", "true"]),
        T,
    );
    assert!(
        out.stderr
            .contains("command-line: line 0: Bad configuration option: prot"),
        "{out:?}"
    );
    assert!(s.signer.pending().is_empty());
}

#[test]
fn through_a_jump_host_each_hop_is_approved_for_its_own_destination() {
    let s = ClientSetup::new();
    let jump = Sshd::start(&s.keys.join("\n"));
    let far = Sshd::start(&s.keys.join("\n"));
    let user = far.user().to_string();
    let cfg = write(
        &s,
        "jump_config",
        &format!(
            "Host far\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump {user}@127.0.0.1:{}\n{}  Ciphers aes256-ctr\n",
            far.port(),
            jump.port(),
            hosts_block(&s)
        ),
    );
    // Options after the destination are options, as in ssh: -v gives debug lines.
    let h = spawn(
        ssh_with_config(&s, &cfg, &["far", "-v", "echo", "through-the-jump"]),
        b"",
    );
    let first = s.approve_login();
    let text = first.to_string();
    assert!(
        text.contains(&format!("{user}@127.0.0.1:{} ", jump.port())),
        "the first approval is for the jump host: {first}"
    );
    assert_eq!(first["origin"], "client", "{first}");
    let second = s.approve_login();
    let text = second.to_string();
    assert!(
        text.contains(&format!("{user}@127.0.0.1:{} ", far.port())),
        "the second approval is for the destination: {second}"
    );
    assert_ne!(second["destinationQuality"], "forwarded", "{second}");
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "through-the-jump", "{out:?}");
    assert!(
        out.stderr.contains("DEBUG"),
        "-v gave no debug lines: {out:?}"
    );
    assert!(out.stderr.contains("jump host"), "{out:?}");
    // A harmless option vmux does not implement: named once, for all the hops.
    assert_eq!(out.stderr.matches("ciphers (").count(), 1, "{out:?}");
    // The destination was reached through the jump host's direct-tcpip channel.
    assert!(
        jump.log().contains(&format!("port {}", far.port())),
        "{}",
        jump.log()
    );
    assert!(far.log().contains("Accepted publickey"), "{}", far.log());
}

/// A local HTTP server answering `hello-vmux` to every request.
fn http_server() -> u16 {
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in http.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello-vmux\r\n");
        }
    });
    port
}

/// GET http://127.0.0.1:PORT/ with curl and `extra` arguments, retried until the
/// forward answers.
fn curl(extra: &[&str], port: u16, d: &mut Daemon) -> String {
    let deadline = Instant::now() + T;
    loop {
        let out = run(
            Command::new("curl")
                .args(["-s", "--max-time", "5"])
                .args(extra)
                .arg(format!("http://127.0.0.1:{port}/")),
            T,
        );
        if out.success() {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "curl {extra:?} never got through: {out:?} {}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dynamic_and_remote_forwards_carry_http() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let http = http_server();
    let socks = common::proc::free_port();
    let remote = common::proc::free_port();
    let spec = format!("{remote}:127.0.0.1:{http}");
    let mut fwd = Daemon::spawn_named(
        "vmux ssh -D -R",
        &mut s.ssh(
            &sshd,
            &["-N", "-D", &socks.to_string(), "-R", &spec, &dest(&sshd)],
        ),
    );
    s.approve_login();
    // -D: curl through the SOCKS port, SOCKS5 with the name resolved there, and SOCKS4a.
    let proxy = format!("127.0.0.1:{socks}");
    assert!(curl(&["--socks5-hostname", &proxy], http, &mut fwd).contains("hello-vmux"));
    assert!(curl(&["--socks4a", &proxy], http, &mut fwd).contains("hello-vmux"));
    // -R: the server listens on `remote`; its connections reach the HTTP server here.
    assert!(curl(&[], remote, &mut fwd).contains("hello-vmux"));
    assert!(
        sshd.log().contains(&format!("port {remote}")),
        "{}",
        sshd.log()
    );
    fwd.terminate(Duration::from_secs(5));
}

#[test]
fn a_forwarded_agent_reaches_the_signer_shown_as_forwarded_via_this_host() {
    let s = ClientSetup::new();
    let hop = Sshd::start(&s.keys.join("\n"));
    let far = Sshd::start(&s.keys.join("\n"));
    let remote = format!(
        "ssh-add -l; ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=publickey \
         -p {} {}@127.0.0.1 echo reached-far",
        far.port(),
        far.user()
    );
    let h = spawn(s.ssh(&hop, &["-A", &dest(&hop), &remote]), b"");
    let first = s.approve_login();
    assert_eq!(first["origin"], "client", "{first}");
    // The login on the far side, through the agent forwarded to the hop.
    let p = s.signer.wait_pending(1);
    assert_eq!(p[0]["purpose"], "login", "{p:?}");
    assert_eq!(p[0]["destinationQuality"], "forwarded", "{p:?}");
    let shown = p[0]["destination"].as_str().unwrap();
    assert!(
        shown.contains(&format!("forwarded via 127.0.0.1:{}", hop.port())),
        "{shown}"
    );
    s.signer.approve_next();
    let out = h.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // ssh-add -l on the far side lists the signer's key; the far login went through.
    let fp = run(
        Command::new("sh").args([
            "-c",
            &format!("echo '{}' | ssh-keygen -lf - | cut -d' ' -f2", s.keys[0]),
        ]),
        T,
    )
    .stdout
    .trim()
    .to_string();
    assert!(out.stdout.contains(&fp), "{out:?} lacks {fp}");
    assert!(out.stdout.contains("reached-far"), "{out:?}");
    // Without -A the server gets no agent.
    let h = spawn(
        s.ssh(&hop, &[&dest(&hop), "ssh-add -l; echo status=$?"]),
        b"",
    );
    s.approve_login();
    let out = h.join().unwrap();
    assert!(out.stdout.contains("status=2"), "{out:?}");
}

#[test]
fn an_explicit_signer_route_is_the_only_one_tried() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let wrong = format!("127.0.0.1:{}", common::proc::free_port());
    let started = Instant::now();
    let out = run(
        &mut s.ssh(&sshd, &["--signer", &wrong, &dest(&sshd), "true"]),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains(&format!("--signer {wrong}"))
            && out.stderr.contains("Connection refused")
            && out.stderr.contains("the only route tried"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(s.signer.pending().is_empty());
    // The paired address was kept: without --signer the signer is found there.
    let h = spawn(s.ssh(&sshd, &[&dest(&sshd), "echo", "kept"]), b"");
    s.approve_login();
    assert_eq!(h.join().unwrap().stdout.trim(), "kept");
}

#[test]
fn a_host_key_of_another_type_is_a_changed_key_and_global_known_hosts_are_read() {
    let s = ClientSetup::new();
    let sshd = Sshd::start(&s.keys.join("\n"));
    let d = dest(&sshd);
    // known_hosts records an ECDSA key for the host; the server shows an Ed25519 key.
    let other = s.tmp.path().join("other_host_key");
    assert!(run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
            .arg(&other),
        T
    )
    .success());
    let ecdsa = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let ecdsa: Vec<&str> = ecdsa.split_whitespace().take(2).collect();
    std::fs::write(
        s.known_hosts(),
        format!("[127.0.0.1]:{} {}\n", sshd.port(), ecdsa.join(" ")),
    )
    .unwrap();
    let out = run(
        &mut s.ssh(
            &sshd,
            &["-o", "StrictHostKeyChecking=accept-new", &d, "true"],
        ),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            && out.stderr.contains("Host key verification failed"),
        "{out:?}"
    );
    assert!(s.signer.pending().is_empty());
    // The key recorded only in a global known_hosts file: known, strict checking passes.
    std::fs::write(s.known_hosts(), "").unwrap();
    let global = write(&s, "ssh_known_hosts", &(sshd.known_hosts_line() + "\n"));
    let g = format!("GlobalKnownHostsFile={}", global.display());
    let h = spawn(
        s.ssh(
            &sshd,
            &[
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &g,
                &d,
                "echo",
                "global-ok",
            ],
        ),
        b"",
    );
    let shown = s.approve_login();
    assert_eq!(shown["destinationQuality"], "new", "{shown}");
    let out = h.join().unwrap();
    assert_eq!(out.stdout.trim(), "global-ok", "{out:?}");
    // Global files are read, never written.
    assert_eq!(
        std::fs::read_to_string(&global).unwrap(),
        sshd.known_hosts_line() + "\n"
    );
}

#[test]
fn dash_i_offers_only_that_key() {
    let s = ClientSetup::with(1, "");
    // The server takes both keys: without -i the first would be asked for.
    let sshd = Sshd::start(&s.keys.join("\n"));
    let second = write(&s, "second.pub", &s.keys[1]);
    let h = spawn(
        s.ssh(
            &sshd,
            &["-i", second.to_str().unwrap(), &dest(&sshd), "echo", "by-i"],
        ),
        b"",
    );
    let p = s.signer.wait_pending(1);
    let second_fp = run(Command::new("ssh-keygen").arg("-lf").arg(&second), T)
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(p[0]["key"], second_fp.as_str(), "{p:?}");
    s.signer.approve_next();
    assert_eq!(h.join().unwrap().stdout.trim(), "by-i");
    // A key no paired signer holds: nothing is asked.
    let stranger = s.tmp.path().join("stranger");
    assert!(run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&stranger),
        T
    )
    .success());
    let out = run(
        &mut s.ssh(
            &sshd,
            &["-i", stranger.to_str().unwrap(), &dest(&sshd), "true"],
        ),
        T,
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        out.stderr.contains("not held by a paired signer"),
        "{out:?}"
    );
    assert!(s.signer.pending().is_empty());
}
