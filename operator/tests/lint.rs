//! The objects the operator generates for the examples pass checkov (`tests/lint/checkov.sh`,
//! the pinned checkov with the skips and their reasons in `tests/lint/checkov.yaml`).
//!
//! A Rust test rather than a step of `tests/run.sh`: it runs with `cargo test -p
//! shop-operator`, on the binary cargo has just built, and its failure names the example, the
//! check and the object, with the rendered YAML kept for a look.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `examples/*.yaml`, `examples/shop.yaml` first.
fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repository().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort_by_key(|path| (!path.ends_with("shop.yaml"), path.clone()));
    assert!(
        files.first().is_some_and(|f| f.ends_with("shop.yaml")),
        "examples/shop.yaml exists: {files:?}"
    );
    files
}

/// Renders `example` with `shop-operator render` into `dir`; returns the file written.
fn render(example: &Path, dir: &Path) -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_shop-operator"))
        // The examples' own namespace (their header says `kubectl create namespace shop`).
        .args(["render", "--namespace", "shop"])
        .arg(example)
        .output()
        .expect("run shop-operator render");
    assert!(
        output.status.success(),
        "shop-operator render {} failed: {}",
        example.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = dir.join(example.file_name().unwrap());
    std::fs::write(&rendered, &output.stdout).unwrap();
    rendered
}

#[test]
fn rendered_examples_pass_checkov() {
    let dir = std::env::temp_dir().join(format!("shop-operator-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rendered: Vec<PathBuf> = examples().iter().map(|e| render(e, &dir)).collect();

    let output = Command::new(repository().join("tests/lint/checkov.sh"))
        .args(&rendered)
        .output();
    let (status, stdout, stderr) = match output {
        Ok(o) => (
            Some(o.status),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (None, String::new(), e.to_string()),
    };
    // checkov prints this summary whenever it ran, passing or not; without it, checkov (or
    // its install) did not run at all.
    let Some(summary) = stdout.lines().find(|l| l.starts_with("Passed checks:")) else {
        let why = format!(
            "tests/lint/checkov.sh did not run checkov (status {status:?}):\n{stdout}\n{stderr}"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED (CI is not true): {why}");
        return;
    };
    assert!(
        status.is_some_and(|s| s.success()) && summary.contains("Failed checks: 0,"),
        "checkov found problems in the objects rendered from examples/*.yaml (kept in {}); \
         fix the builder in operator/src/build/, or skip the check in tests/lint/checkov.yaml \
         with its reason:\n{stdout}\n{stderr}",
        dir.display()
    );
    // Every example's objects were read: a file checkov could not parse is not a pass.
    let passed: usize = summary
        .trim_start_matches("Passed checks:")
        .split(',')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("checkov's summary starts with the number of passed checks");
    assert!(
        passed >= 50 * rendered.len(),
        "checkov passed only {passed} checks for {} files: did it read them? {stdout}",
        rendered.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
