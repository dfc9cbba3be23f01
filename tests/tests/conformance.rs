//! The conformance suite (`ferry-conformance`) against real agents:
//! - the Rust PostgreSQL agent (`target/debug/ferry-agent`) passes every check;
//! - the Python SQLite example (`sdk/python/examples/sqlite_agent.py`, SDK from the working
//!   tree through PYTHONPATH) passes every check;
//! - the same example with one rule broken (`conformance/testdata/misbehaving_agent.py`) fails
//!   exactly the check for that rule, so the checks are not vacuous.
//!
//! Needs `cargo build --workspace` (the binaries) and Python with grpcio and protobuf
//! (`pip install ./sdk/python`).

use std::path::Path;
use std::process::Command;

use ferry_tests::process::{workspace_bin, workspace_root};

/// Runs the suite; returns (exit code, stdout).
fn conformance(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let bin = workspace_bin("ferry-conformance").expect("ferry-conformance binary");
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ferry-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

fn python_agent(script: &Path) -> String {
    let root = workspace_root();
    let ok = Command::new("python3")
        .args(["-c", "import grpc, google.protobuf"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 lacks grpcio/protobuf: pip install ./sdk/python");
    format!("env PYTHONPATH='{}' python3 '{}'", root.join("sdk/python/src").display(), script.display())
}

fn sqlite_seed() -> String {
    format!("python3 '{}'", workspace_root().join("sdk/python/examples/sqlite_seed.py").display())
}

#[test]
fn rust_postgresql_agent_passes() {
    let agent = workspace_bin("ferry-agent").expect("ferry-agent binary");
    let (code, out) = conformance(&["--agent-cmd", &agent.display().to_string()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all 9 checks passed"), "{out}");
}

#[test]
fn python_sqlite_example_passes() {
    let agent = python_agent(&workspace_root().join("sdk/python/examples/sqlite_agent.py"));
    let (code, out) = conformance(&["--seed-cmd", &sqlite_seed(), "--agent-cmd", &agent], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all 9 checks passed"), "{out}");
}

#[test]
fn misbehaving_agents_fail_the_matching_check() {
    let agent = python_agent(&workspace_root().join("conformance/testdata/misbehaving_agent.py"));
    // (`no_window` is caught too, but slowly: every attempt loses its session.)
    for (mode, check) in [
        ("no_heartbeat", "heartbeats and last_seen"),
        ("ignore_cancel", "cancellation honoured within 5 s"),
        ("from_scratch", "resume from the checkpoint after the link drops"),
        ("ignore_filtering", "draft sync rules answered"),
    ] {
        let (code, out) = conformance(
            &["--discard-logs", "--seed-cmd", &sqlite_seed(), "--agent-cmd", &agent],
            &[("MISBEHAVE", mode)],
        );
        assert_eq!(code, 1, "{mode}: {out}");
        let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert_eq!(failed.len(), 1, "{mode}: exactly one check should fail:\n{out}");
        assert!(failed[0].starts_with(&format!("FAIL  {check} (")), "{mode}: {out}");
    }
}
