//! Hash-chained JSON-lines journals (`vmux_proto::journal`): `vmux log --verify` reads
//! a file that may have been edited by anyone with access to it.
//!
//! Covers: `verify` on arbitrary UTF-8 (non-UTF-8 inputs are skipped), checking that
//! `Ok(n)` counts every line and an error names a line that exists. Then a journal is
//! written with the real `Journal::append` from records taken from the input's lines
//! (each a JSON object, or wrapped as `{"k": line}`): `verify` must accept it, and must
//! reject it once two adjacent lines are swapped or a line other than the last is
//! removed. The anchor file beside the log is then replaced by the input's bytes and
//! `verify_file` must not panic. Journal files live under `$TMPDIR`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use vmux_proto::journal::{self, verify, Journal};

/// One journal file per fuzzing process, rewritten on every input.
fn journal_path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir()
            .join(format!("vmux-fuzz-journal-{}", std::process::id()))
            .join("journal.log")
    })
}

const MAX_RECORDS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // 1. Arbitrary text.
    let lines = text.lines().count();
    match verify(text) {
        Ok(n) => assert_eq!(n, lines, "verify counted {n} of {lines} lines"),
        Err(t) => {
            assert!(
                t.line >= 1 && t.line <= lines,
                "reported line {} of {lines}",
                t.line
            );
            let _ = t.to_string();
        }
    }

    // 2. A journal written by the real writer, then tampered with.
    let records: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .take(MAX_RECORDS)
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                let mut m = serde_json::Map::new();
                m.insert("k".into(), serde_json::Value::from(l));
                m
            }
        })
        .collect();
    let path = journal_path();
    let _ = std::fs::remove_file(path);
    {
        let mut j = Journal::open(path).expect("open journal");
        for r in &records {
            j.append(r.clone()).expect("append");
        }
    }
    let written = std::fs::read_to_string(path).expect("read journal");
    // The anchor beside it (written by the writer's flusher) vouches for the tail; an
    // anchor file with the input's bytes in it is read without panicking, and never
    // makes a log verify that the chain alone rejects.
    let anchor = vmux_proto::journal::anchor_path(path);
    if records.is_empty() {
        assert!(journal::verify_file(path).is_ok());
    } else {
        assert!(
            journal::verify_file(path).unwrap().anchored,
            "own anchor rejected"
        );
    }
    std::fs::write(&anchor, data).expect("write anchor");
    let _ = journal::verify_file(path).map(|v| assert_eq!(v.lines, records.len()));
    let _ = std::fs::remove_file(&anchor);
    let _ = std::fs::remove_file(path);
    assert_eq!(
        verify(&written),
        Ok(records.len()),
        "writer's own journal rejected"
    );

    let ls: Vec<&str> = written.lines().collect();
    let n = ls.len();
    if n >= 2 {
        let i = usize::from(data[0]) % (n - 1);
        let mut swapped = ls.clone();
        swapped.swap(i, i + 1);
        assert!(
            verify(&swapped.join("\n")).is_err(),
            "swap of lines {i},{} undetected",
            i + 1
        );
        let mut removed = ls.clone();
        removed.remove(i);
        assert!(
            verify(&removed.join("\n")).is_err(),
            "removal of line {i} undetected"
        );
    }
});
