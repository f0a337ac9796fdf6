//! The Node compatibility scripts of tests/compat (official Supabase clients, unchanged).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `script` of tests/compat under node with `args`; fails the test with its output.
pub fn run_node(script: &str, args: &[String]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    assert!(
        dir.join("node_modules/@supabase/supabase-js").exists(),
        "run `npm ci --prefix tests/compat` first (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
