//! A check of the crate's shape: the top-level modules (a folder counts as one) depend on each
//! other without cycles, so each part can be read, and replaced, from its dependencies up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<name>` paths that are items of the crate root, not modules.
const ROOT_ITEMS: &[&str] = &["SessionId", "CloseCode", "Engine", "stop_handler"];

/// The component a source file belongs to: its folder under src/, or its own name.
fn component(relative: &Path) -> String {
    let mut parts = relative.components();
    let first = parts.next().expect("a file under src/");
    let name = first.as_os_str().to_string_lossy().into_owned();
    name.strip_suffix(".rs").map_or(name.clone(), str::to_owned)
}

/// Every `crate::<module>` a file's non-test, non-comment code names.
fn dependencies(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !ROOT_ITEMS.contains(&name.as_str()) {
                out.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A cycle among `edges`, if any, as the components on it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            return Some(path[i..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

/// The actors crate has no cycle between its top-level modules (folders count as one).
#[test]
fn top_level_modules_depend_on_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = component(file.strip_prefix(&src).expect("under src/"));
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let deps: Vec<String> = dependencies(&text)
            .into_iter()
            .filter(|d| *d != from)
            .collect();
        edges.entry(from).or_default().extend(deps);
    }
    assert!(edges.len() > 10, "the walk found the modules: {edges:?}");
    assert_eq!(find_cycle(&edges), None, "module dependencies: {edges:#?}");
}

/// The cycle finder finds a cycle where there is one.
#[test]
fn a_cycle_is_found() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&edges).map(|c| c.len()),
        Some(3),
        "a → b → c → a"
    );
}
