//! Issue 23: the Debian package. `scripts/package` packs the binary this test run
//! built (the release build is the script's default; building one here would double
//! the suite's compile time), then the package is installed into a scratch root with
//! `dpkg --root`, its binary run, its units checked with `systemd-analyze verify`, its
//! man pages and completions read, and it is purged without leaving a file behind.

mod common;

use common::proc::{run, Output};
use common::vmux::T;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd, Duration::from_secs(300));
    assert!(out.success(), "{cmd:?}: {out:?}");
    out
}

/// Every path under `root` but dpkg's own database, sorted.
fn files_outside_dpkg(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(root.join("var/lib/dpkg")) {
                continue;
            }
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut v = vec![];
    walk(root, root, &mut v);
    v.sort();
    v
}

#[test]
fn the_package_installs_runs_verifies_and_purges_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    let built = ok(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package"))
            .args(["--binary", env!("CARGO_BIN_EXE_vmux"), "--out"])
            .arg(&dist)
            .env("VMUX_DEB_COMPRESSION", "gzip"),
    );
    let deb = PathBuf::from(built.stdout.lines().next().unwrap());
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(concat!("vmux_", env!("CARGO_PKG_VERSION"), "_")),
        "{built:?}"
    );
    // SHA256SUMS names the package and matches it.
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(deb.file_name().unwrap().to_str().unwrap()),
        "{sums}"
    );
    ok(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dist));

    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb)).stdout;
    for field in ["Package: vmux", "Depends: libc6", "Description: "] {
        assert!(info.contains(field), "{field}: {info}");
    }
    if cfg!(feature = "tpm") {
        assert!(
            info.contains("libtss2-esys"),
            "a TPM build links libtss2: {info}"
        );
    }

    // Into a scratch root of its own (no dependencies installed there: forced).
    let root = tmp.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .arg("--log=/dev/null")
            .args(args);
        c
    };
    ok(dpkg(&["--force-depends", "-i"]).arg(&deb));
    let listed = ok(&mut dpkg(&["-L", "vmux"])).stdout;
    for path in [
        "/usr/bin/vmux",
        "/usr/lib/systemd/user/vmux-agent.socket",
        "/usr/lib/systemd/user/vmux-agent.service",
        "/usr/lib/systemd/user/vmux-signer.service",
        "/usr/share/bash-completion/completions/vmux",
        "/usr/share/zsh/vendor-completions/_vmux",
        "/usr/share/fish/vendor_completions.d/vmux.fish",
        "/usr/share/man/man1/vmux.1.gz",
        "/usr/share/man/man1/vmux-git-setup.1.gz",
        "/usr/share/man/man1/vmux-doctor.1.gz",
        "/usr/share/doc/vmux/copyright",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "{path} not installed: {listed}"
        );
    }

    // The installed binary runs, and is the TPM build.
    let bin = root.join("usr/bin/vmux");
    let v = ok(Command::new(&bin).arg("--version")).stdout;
    assert_eq!(v.trim(), concat!("vmux ", env!("CARGO_PKG_VERSION")));
    let home = tmp.path().join("vmux-home");
    let doctor = run(
        Command::new(&bin)
            .arg("doctor")
            .env("VMUX_HOME", &home)
            .env("HOME", tmp.path())
            .env_remove("SSH_AUTH_SOCK"),
        T,
    );
    assert_eq!(doctor.status.code(), Some(1), "{doctor:?}");
    assert!(
        doctor.stdout.contains("the agent is not running"),
        "{doctor:?}"
    );
    if cfg!(feature = "tpm") {
        ok(Command::new(&bin)
            .args(["signer", "init", "--name", "pkg"])
            .env("VMUX_HOME", &home));
        let no_tpm = run(
            Command::new(&bin)
                .args(["signer", "keys", "add", "--store", "tpm"])
                .env("VMUX_HOME", &home)
                .env("TPM2TOOLS_TCTI", "swtpm:host=127.0.0.1,port=1"),
            T,
        );
        assert!(!no_tpm.success(), "{no_tpm:?}");
        assert!(
            no_tpm.stderr.contains("cannot reach the TPM"),
            "the packaged binary speaks TPM: {no_tpm:?}"
        );
    }

    // The units as systemd reads them, for the user manager and the system one: in a
    // mount namespace of its own where /usr/bin holds the installed binary too (the
    // units start /usr/bin/vmux, which this machine has not installed).
    let units: Vec<String> = [
        "vmux-agent.socket",
        "vmux-agent.service",
        "vmux-signer.service",
    ]
    .iter()
    .map(|u| {
        root.join("usr/lib/systemd/user")
            .join(u)
            .display()
            .to_string()
    })
    .collect();
    let runtime = tmp.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={}:/usr/bin /usr/bin && \
         systemd-analyze verify {u} && XDG_RUNTIME_DIR={} systemd-analyze --user verify {u}",
        root.join("usr/bin").display(),
        runtime.display(),
        u = units.join(" ")
    );
    let verified = ok(Command::new("unshare").args(["--mount", "sh", "-c", &script]));
    assert!(verified.stderr.trim().is_empty(), "{verified:?}");
    let socket = std::fs::read_to_string(&units[0]).unwrap();
    assert!(
        socket.contains("ListenStream=%h/.ssh/vmux-agent.sock"),
        "{socket}"
    );
    let service = std::fs::read_to_string(&units[1]).unwrap();
    assert!(
        service.contains("ExecStart=/usr/bin/vmux agent run"),
        "{service}"
    );
    assert!(!service.contains("VMUX_HOME"), "{service}");

    // Man pages render; the bash completion loads.
    let page = ok(Command::new("man")
        .arg("-l")
        .arg(root.join("usr/share/man/man1/vmux-git-setup.1.gz"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80"))
    .stdout;
    assert!(page.contains("--share-connections"), "{page}");
    let complete = ok(Command::new("bash").args([
        "-c",
        &format!(
            "source {}; complete -p vmux",
            root.join("usr/share/bash-completion/completions/vmux")
                .display()
        ),
    ]))
    .stdout;
    assert!(complete.contains("vmux"), "{complete}");

    // Purged: nothing of it is left.
    ok(&mut dpkg(&["--purge", "vmux"]));
    let left = files_outside_dpkg(&root);
    assert_eq!(
        left,
        vec![PathBuf::from("var"), PathBuf::from("var/lib")],
        "{left:?}"
    );
}
