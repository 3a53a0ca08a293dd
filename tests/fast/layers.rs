//! The one-way rule of docs/ARCHITECTURE.md, checked on the source: every
//! `crate::<module>` a module of `src/` names (outside its unit tests) is in
//! its own layer or a lower one, and no modules import each other in a
//! circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top first (docs/ARCHITECTURE.md, "The layers of `src/`").
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["app"],
    &["generation", "esp", "image", "profile", "gc"],
    &["store", "tree", "modules", "initrd", "config", "gpt"],
    &[
        "fsutil",
        "host",
        "failpoint",
        "hint",
        "notes",
        "state",
        "units",
    ],
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| {
            panic!("src/{module}: not in a layer of docs/ARCHITECTURE.md; add it there and to LAYERS here")
        })
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module -> the top-level modules it names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "bin" || rel.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn every_import_points_down_or_sideways() {
    let mut wrong = Vec::new();
    for (m, deps) in imports() {
        for d in deps {
            if rank(&d) < rank(&m) {
                wrong.push(format!("src/{m} imports crate::{d}, a higher layer"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = imports();
    // Depth-first search; a back edge is a circle.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
        circles: &mut Vec<String>,
    ) {
        state.insert(n, false);
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(false) => {
                    let at = path.iter().position(|p| p == d).unwrap_or(0);
                    circles.push(format!("{} -> {d}", path[at..].join(" -> ")));
                }
                Some(true) => {}
                None => visit(d, g, state, path, circles),
            }
        }
        path.pop();
        state.insert(n, true);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            visit(n, &graph, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
    // The check sees the real tree: the layers it knows are all there.
    assert!(
        graph.contains_key("app") && graph.contains_key("esp"),
        "{graph:?}"
    );
}
