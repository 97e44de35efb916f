//! The layout keeps its promise: the roles (`hub`, `police`) depend on the contract and the
//! shared infrastructure and never on each other; `contract` depends on nothing; `shared`
//! on the contract only; only `app`, the composition root, sees everything. Within
//! `contract` and `shared`, no two modules import each other (test modules aside: a test may
//! reach for a neighbour's fixture).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each may import.
const ALLOWED: &[(&str, &[&str])] = &[
    ("connectors", &["contract", "shared"]),
    ("contract", &[]),
    ("shared", &["contract"]),
    ("hub", &["contract", "shared"]),
    ("police", &["contract", "shared"]),
    (
        "app",
        &["connectors", "contract", "shared", "hub", "police"],
    ),
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of a file without comments and without its test module (by convention the
/// file's last item).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// For each module directly under `dir` (`<dir>/<name>/` or `<dir>/<name>.rs`), the other
/// modules under `dir` its code names as `<prefix><name>`.
fn imports_under(dir: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            (path.is_dir() || (path.extension()? == "rs" && name != "mod" && name != "lib"))
                .then_some(name)
        })
        .filter(|name| name != "main")
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &modules {
        let files = if dir.join(module).is_dir() {
            rust_files(&dir.join(module))
        } else {
            vec![dir.join(format!("{module}.rs"))]
        };
        let entry = imports.entry(module.clone()).or_default();
        for file in files {
            let code = code_of(&file);
            // How this file names a sibling of `module` relatively: `super::` from
            // `<module>.rs` or `<module>/mod.rs`, one more `super::` per level below.
            let depth = file.strip_prefix(dir).unwrap().components().count();
            let levels = if file.ends_with("mod.rs") {
                depth - 1
            } else {
                depth
            };
            let relative = "super::".repeat(levels);
            let grouped = [
                first_segments_of_groups(&code, prefix),
                first_segments_of_groups(&code, &relative),
            ]
            .concat();
            for other in &modules {
                let named = [prefix, relative.as_str()].iter().any(|path| {
                    code.contains(&format!("{path}{other}::"))
                        || code.contains(&format!("{path}{other};"))
                        || code.contains(&format!("{path}{other} as "))
                }) || grouped.iter().any(|name| name == other);
                if other != module && named {
                    entry.insert(other.clone());
                }
            }
        }
    }
    imports
}

/// The first path segment of each item of every `<path>{...}` group in `code`: for
/// `crate::{hub::api, shared}` with `crate::`, `hub` and `shared`.
fn first_segments_of_groups(code: &str, path: &str) -> Vec<String> {
    let opening = format!("{path}{{");
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(&opening) {
        let group = &rest[at + opening.len()..];
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(first_segment(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                item.push(c);
            }
        }
        names.push(first_segment(&item));
        rest = &rest[at + opening.len()..];
    }
    names
}

fn first_segment(item: &str) -> String {
    item.trim()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_roles_depend_on_the_contract_and_shared_infrastructure_never_on_each_other() {
    let imports = imports_under(&src(), "crate::");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    assert_eq!(
        imports.keys().map(String::as_str).collect::<Vec<_>>(),
        allowed.keys().copied().collect::<Vec<_>>(),
        "the top-level modules are the contract, shared infrastructure, the roles and app"
    );
    for (module, imported) in &imports {
        let forbidden: Vec<&String> = imported
            .iter()
            .filter(|other| !allowed[module.as_str()].contains(&other.as_str()))
            .collect();
        assert!(
            forbidden.is_empty(),
            "{module} imports {forbidden:?}; it may import only {:?}",
            allowed[module.as_str()]
        );
    }
}

#[test]
fn no_two_modules_within_the_contract_shared_or_a_role_import_each_other() {
    for (dir, prefix) in [
        ("contract", "crate::contract::"),
        ("shared", "crate::shared::"),
        ("hub", "crate::hub::"),
        ("police", "crate::police::"),
        ("connectors", "crate::connectors::"),
    ] {
        let imports = imports_under(&src().join(dir), prefix);
        for (module, imported) in &imports {
            for other in imported {
                assert!(
                    !imports[other].contains(module),
                    "{dir}::{module} and {dir}::{other} import each other"
                );
            }
        }
    }
}
