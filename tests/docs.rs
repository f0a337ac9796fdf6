//! The docs a newcomer reads stay short and point only at what exists: the README's length,
//! every relative link (and its `#anchor`) and every repository path named in backticks in the
//! markdown, and every `.md` file a source comment names. (The metrics table is checked
//! against the code in src/telemetry.rs.)

use std::fs;
use std::path::{Path, PathBuf};

/// The README is the page a newcomer reads first: the rest lives in docs/.
const README_LINES_MAX: usize = 150;

/// Folders never walked: build output, installed packages, git's own.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", ".git"];

/// The repository's top-level folders: a backticked path starting with one is a reference.
const TOP_DIRS: &[&str] = &[
    ".ci",
    "actors",
    "benches",
    "docs",
    "geo",
    "migrations",
    "protocol",
    "scripts",
    "src",
    "storage",
    "tests",
];

/// File endings that make a backticked word a file reference.
const FILE_ENDINGS: &[&str] = &[
    ".md", ".rs", ".sh", ".toml", ".json", ".svg", ".cjs", ".lock", ".sql",
];

/// Source files whose comments are checked for `.md` references.
const SOURCE_ENDINGS: &[&str] = &[".rs", ".toml", ".sh", ".cjs"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` whose name ends with one of `endings`, symlinks not followed.
fn files(dir: &Path, endings: &[&str], out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && !SKIPPED_DIRS.contains(&name.as_str()) {
            files(&path, endings, out);
        } else if meta.is_file() && endings.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

fn markdown_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(root(), &[".md"], &mut out);
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The lines of a markdown file outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    prose_lines(markdown)
        .into_iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| slug(l.trim_start_matches('#')))
        .collect()
}

/// The targets of the `[text](target)` links of a line.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim());
            rest = &rest[end..];
        }
    }
    out
}

/// Whether a backticked word names a file or folder of the repository.
fn is_path_reference(word: &str) -> bool {
    let plain = !word.is_empty()
        && !word.contains("://")
        && !word.starts_with('/')
        && !word
            .chars()
            .any(|c| c.is_whitespace() || "<>*{}\"':=|,()$?".contains(c));
    let top = word
        .split('/')
        .next()
        .is_some_and(|first| word.contains('/') && TOP_DIRS.contains(&first));
    plain && (top || FILE_ENDINGS.iter().any(|e| word.ends_with(e)))
}

/// Where a reference may resolve: beside the file, or from the repository root.
fn resolves(from: &Path, target: &str) -> bool {
    let beside = from.parent().unwrap_or(root()).join(target);
    beside.exists() || root().join(target).exists()
}

/// The README stays a page a newcomer reads: at most README_LINES_MAX lines.
#[test]
fn the_readme_fits_a_page() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_LINES_MAX,
        "README.md has {lines} lines; move detail into docs/"
    );
}

/// Every relative link in the repository's markdown reaches a file that exists, and every
/// `#anchor` it names is a heading of that file.
#[test]
fn markdown_links_reach_existing_files_and_headings() {
    let mut broken = Vec::new();
    let files = markdown_files();
    assert!(files.len() >= 5, "found only {files:?}");
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let at = format!("{}:{n}: {target}", relative(file));
                if !dest.exists() {
                    broken.push(format!("{at} (no such file)"));
                } else if !anchor.is_empty() {
                    let heads = anchors(&fs::read_to_string(&dest).unwrap_or_default());
                    if !heads.iter().any(|h| h == anchor) {
                        broken.push(format!("{at} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Every repository path the markdown names in backticks (`actors/src/…`, `benches/…sh`,
/// `config.toml`) exists, so a moved file cannot leave the docs pointing at nothing.
#[test]
fn markdown_names_only_paths_that_exist() {
    let mut missing = Vec::new();
    for file in markdown_files() {
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in prose_lines(&text) {
            // Odd pieces between backticks are code spans.
            for word in line.split('`').skip(1).step_by(2) {
                if is_path_reference(word) && !resolves(&file, word) {
                    missing.push(format!("{}:{n}: `{word}`", relative(&file)));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}

/// Every `.md` document a source comment names exists in the repository (or, for `shared/…`,
/// in the project's shared folder beside it).
#[test]
fn source_comments_name_only_documents_that_exist() {
    let mut sources = Vec::new();
    files(root(), SOURCE_ENDINGS, &mut sources);
    assert!(sources.len() > 50, "found only {} sources", sources.len());
    let mut missing = Vec::new();
    for file in sources {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let marker = if file.extension().is_some_and(|e| e == "rs" || e == "cjs") {
            "//"
        } else {
            "#"
        };
        for (i, line) in text.lines().enumerate() {
            let Some((_, comment)) = line.split_once(marker) else {
                continue;
            };
            let words = comment.split(|c: char| !(c.is_alphanumeric() || "/._-".contains(c)));
            let documents = words.filter(|w| w.len() > ".md".len() && w.ends_with(".md"));
            for word in documents {
                let word = word.trim_start_matches("./");
                let found = if let Some(shared) = word.strip_prefix("../") {
                    root().parent().is_some_and(|p| p.join(shared).exists())
                } else if word.starts_with("shared/") {
                    root().parent().is_some_and(|p| p.join(word).exists())
                } else {
                    resolves(&file, word)
                };
                if !found {
                    missing.push(format!("{}:{}: {word}", relative(&file), i + 1));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documents that do not exist:\n{}",
        missing.join("\n")
    );
}

/// The anchor and reference rules above behave as GitHub and the docs use them.
#[test]
fn the_checks_recognise_what_they_should() {
    assert_eq!(
        slug(" Geo: `realtime:nearby`, cell rooms, nearby query"),
        "geo-realtimenearby-cell-rooms-nearby-query"
    );
    assert_eq!(
        link_targets("see [a](docs/A.md#x) and ![b](c.svg)"),
        ["docs/A.md#x", "c.svg"]
    );
    for word in [
        "actors/src/metrics.rs",
        "config.toml",
        ".ci/run",
        "tests/compat/",
    ] {
        assert!(is_path_reference(word), "{word}");
    }
    for word in [
        "application/octet-stream",
        "/api/jobs",
        "sqlite://data/locus.db",
        "realtime:room:*",
        "cargo bench --bench nearby",
        "create/get/cancel",
    ] {
        assert!(!is_path_reference(word), "{word}");
    }
    assert!(!resolves(&root().join("README.md"), "docs/NO_SUCH.md"));
}
