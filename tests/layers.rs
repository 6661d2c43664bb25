//! The architecture, checked: each top-level module of `src/` sits in a layer, and a
//! module may name (`crate::…`) only modules of the layers below its own. So there is no
//! circle between folders and nothing low reaches up: routes → app → session → provider
//! → message. A new top-level module fails this test until it is given a layer here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top to bottom. A module may import from the layers after its own, never before it
/// nor from its own layer (modules of one layer know nothing of each other).
const LAYERS: &[&[&str]] = &[
    &["server"],
    &["openapi"],
    &["routes"],
    &["app", "error"],
    &["session", "idempotency"],
    &["memory", "store"],
    &["provider", "metrics", "keys"],
    &["config", "clock"],
    &["message", "secret"],
    &["json_text"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `crate::<module>` a file names, comments left out; `crate::{a, b::C}` counts
/// each of `a` and `b`.
fn named_modules(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the other top-level modules its files name.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let source = fs::read_to_string(&file).unwrap();
        let names = graph.entry(top.clone()).or_default();
        names.extend(named_modules(&source).into_iter().filter(|m| *m != top));
    }
    graph
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for (module, names) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!("`{module}` has no layer in tests/layers.rs"));
            continue;
        };
        for name in names {
            match layer_of(name) {
                Some(layer) if layer > own => {}
                Some(_) => wrong.push(format!(
                    "`{module}` imports `{name}`, which is not below it"
                )),
                None => wrong.push(format!("`{module}` imports `{name}`, which has no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_conversation_types_import_nothing_of_the_crate_but_its_json_string_writer() {
    let graph = import_graph();
    assert_eq!(
        graph.get("message"),
        Some(&BTreeSet::from(["json_text".to_owned()]))
    );
    assert_eq!(graph.get("json_text"), Some(&BTreeSet::new()));
    assert_eq!(graph.get("secret"), Some(&BTreeSet::new()));
}

#[test]
fn the_parser_sees_grouped_and_nested_imports_and_skips_comments() {
    let source = "use crate::{app::AppState, error::ApiError};\n\
                  let x = crate::session::turn::start();\n\
                  // crate::server is only mentioned here\n";
    let names: Vec<_> = named_modules(source).into_iter().collect();
    assert_eq!(names, ["app", "error", "session"]);
}
