//! The shape ARCHITECTURE.md describes, checked: library crates depend only downwards
//! (on `vmux-proto`; the client also on the agent), and no module of a library crate
//! uses, through any chain, a module that uses it: each crate's files read as layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LIBS: [&str; 4] = ["proto", "agent", "signer", "client"];

/// What each library crate may use: everything shares `vmux-proto`; `vmux ssh`
/// (client) builds on the agent for `-A` and the session certificate; nothing else.
fn may_use(c: &str) -> &'static [&'static str] {
    match c {
        "client" => &["proto", "agent"],
        "proto" => &[],
        _ => &["proto"],
    }
}

#[test]
fn library_crates_depend_only_downwards() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for c in LIBS {
        let toml = std::fs::read_to_string(root.join(format!("crates/{c}/Cargo.toml"))).unwrap();
        let src = root.join(format!("crates/{c}/src"));
        let files = sources(&src);
        for other in LIBS.iter().filter(|o| **o != c && !may_use(c).contains(o)) {
            assert!(
                !toml.contains(&format!("vmux-{other}")),
                "crates/{c} depends on vmux-{other} (ARCHITECTURE.md, crates)"
            );
            for (file, text) in &files {
                assert!(
                    !text.contains(&format!("vmux_{other}::")),
                    "crates/{c}/src/{file} uses vmux_{other}"
                );
            }
        }
    }
}

#[test]
fn no_module_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for c in LIBS {
        let src = root.join(format!("crates/{c}/src"));
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, text) in sources(&src) {
            let top = file.split('/').next().unwrap().trim_end_matches(".rs");
            if top == "lib" {
                continue;
            }
            // Test modules may reach anywhere; comments name modules without using them.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = graph.entry(top.to_string()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
        let known: BTreeSet<String> = graph.keys().cloned().collect();
        for g in graph.values_mut() {
            g.retain(|d| known.contains(d));
        }
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "crates/{c}: module cycles {found:?}; move what both sides need below them \
             (as the shared state sits below each step of ARCHITECTURE.md's request path)"
        );
    }
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, text).
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}
