//! Issue 21: what `scripts/soak` found, each as an ordinary test.

mod common;

use common::proc::is_root;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vmux_proto::journal::{verify_file, Journal};

/// A small tmpfs, unmounted on drop: a disk that fills up for real.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        assert!(
            is_root(),
            "this test mounts a small tmpfs to fill a disk for real and needs root (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "vmux-test",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs");
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file until the disk says it is full.
    fn fill(&self) -> PathBuf {
        let p = self.path("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn record(n: usize, pad: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("n".into(), Value::from(n));
    m.insert("pad".into(), Value::from("x".repeat(pad)));
    m
}

fn lines_of(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a whole record"))
        .collect()
}

/// The soak filled the signer's disk while it logged: the kernel took part of a line,
/// then said ENOSPC; the next line, once the disk had room again, was written after that
/// half line, and `vmux signer log --verify` failed for good ("line 33: not a JSON
/// record"). A line that cannot be written whole must not be written at all.
#[test]
fn a_full_disk_leaves_no_half_line_in_the_log() {
    let disk = SmallDisk::new("1m");
    let log = disk.path("decisions.log");
    let mut j = Journal::open(&log).unwrap();
    for n in 0..3 {
        j.append(record(n, 100)).unwrap().wait().unwrap();
    }
    let filler = disk.fill();
    // The next line is longer than the room left in the page the log ends in: the
    // kernel takes what fits, then says ENOSPC.
    let room = 4096 - (std::fs::metadata(&log).unwrap().len() % 4096) as usize;
    let mut written = vec![0, 1, 2];
    assert!(
        j.append(record(3, room + 200)).is_err(),
        "a line the disk has no room for is refused"
    );
    // More lines while the disk is full: refused or written whole.
    for n in 4..10 {
        if j.append(record(n, 50)).is_ok() {
            written.push(n);
        }
    }
    std::fs::remove_file(filler).unwrap();
    // The disk takes writes again: appends go on (the flusher retries within 200 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 100;
    while written.iter().filter(|&&x| x >= 100).count() < 3 {
        assert!(Instant::now() < deadline, "the log never took lines again");
        match j.append(record(n, 100)) {
            Ok(d) => {
                // In the file now, whether or not the anchor could follow yet.
                written.push(n);
                let _ = d.wait();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        n += 1;
    }
    j.sync();
    drop(j);
    let on_disk: Vec<u64> = lines_of(&log)
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = written.iter().map(|&x| x as u64).collect();
    assert_eq!(on_disk, want, "exactly the lines that were accepted, whole");
    verify_file(&log).expect("the chain verifies after the disk was full");
    // And it opens again, and goes on.
    let mut j = Journal::open(&log).unwrap();
    j.append(record(1000, 10)).unwrap().wait().unwrap();
    drop(j);
    verify_file(&log).expect("the chain verifies after a reopen");
}
