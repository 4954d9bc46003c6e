//! What the image carries: the `kube-dvr` binary built the way the
//! Dockerfile builds it has no `lab` subcommand and none of the lab's or the
//! API stand-in's code (`kube-standin` is an unauthenticated API server).
//!
//! The test takes the `cargo build` flags from the Dockerfile itself, builds
//! with them (debug profile: features, not optimisation, decide what is
//! linked in, and the debug build reuses the test build's dependencies) and
//! inspects the result: `--help`, the refusal of `lab`, and the symbol and
//! source-path strings in the file. The same inspection of the test build's
//! own binary (lab on by default) shows the markers are found when present.
//!
//! The nested `cargo build` shares the target directory (a `cargo test` does
//! not hold its lock while tests run), so it reuses every dependency; it
//! also copies its binary over `target/debug/kube-dvr`, which the test puts
//! back for the test binaries that run after it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of the Dockerfile's `cargo build` (continuation lines
/// joined, up to the next `&&`).
fn dockerfile_cargo_build() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a `cargo build` in the Dockerfile");
    let start = line.find("cargo build").unwrap() + "cargo build".len();
    let cmd = line[start..].split("&&").next().unwrap();
    cmd.split_whitespace().map(str::to_string).collect()
}

/// Builds `kube-dvr` with the Dockerfile's flags (minus `--release`);
/// returns a copy of the binary (`<name>.product`).
fn build_like_the_dockerfile(flags: &[String]) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .arg("build")
        .args(flags.iter().filter(|f| *f != "--release"))
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(repo())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| !test_env(k)))
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build {flags:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last compiler-artifact message for the binary names its file.
    let built = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kube-dvr")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo reported the kube-dvr executable");
    let copy = built.with_extension("product");
    std::fs::copy(&built, &copy).unwrap();
    copy
}

/// Variables `cargo test` sets for the test process. Build scripts' rerun
/// checks read cargo's environment, so with them the nested build would
/// rebuild half the dependency tree (and the next plain build again).
fn test_env(key: &str) -> bool {
    (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH"
}

/// Replaces `path` by `bytes` (through a rename: the old file may be busy).
fn put_back(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("restore");
    std::fs::write(&tmp, bytes).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&tmp, mode).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Byte strings that only the lab or the stand-in put into a binary: mangled
/// module paths (legacy and v0 mangling both spell `<len><name>`) and the
/// source paths of panic locations and debug info.
const MARKERS: &[&str] = &[
    "12kube_standin",
    "8kube_dvr3lab",
    "crates/standin/src/",
    "src/lab/",
];

/// The markers found in `binary` (`grep -F`: a debug binary is hundreds of
/// megabytes, too many for an unoptimised byte loop).
fn markers_in(binary: &Path) -> Vec<&'static str> {
    let mut grep = Command::new("grep");
    grep.args(["--text", "--only-matching", "--fixed-strings"]);
    for m in MARKERS {
        grep.args(["-e", m]);
    }
    let out = grep.arg(binary).output().expect("run grep");
    let found = String::from_utf8_lossy(&out.stdout);
    MARKERS
        .iter()
        .copied()
        .filter(|m| found.lines().any(|l| l == *m))
        .collect()
}

/// The subcommands `--help` lists.
fn subcommands(binary: &Path) -> Vec<String> {
    let out = Command::new(binary).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_image_binary_has_no_lab_and_no_stand_in() {
    let test_build = Path::new(env!("CARGO_BIN_EXE_kube-dvr"));
    let test_binary = std::fs::read(test_build).unwrap();
    // The inspection can fail: the test build's binary, with the default
    // `lab` feature, shows every marker and the `lab` subcommand.
    if cfg!(feature = "lab") {
        assert!(subcommands(test_build).iter().any(|c| c == "lab"));
        assert_eq!(markers_in(test_build), MARKERS);
    }

    let flags = dockerfile_cargo_build();
    assert!(
        flags.iter().any(|f| f == "--no-default-features"),
        "the Dockerfile must build without the default `lab` feature: {flags:?}"
    );
    assert!(
        !flags
            .iter()
            .any(|f| f == "--all-features" || f.starts_with("--features") || f == "-F"),
        "the Dockerfile must not turn features back on: {flags:?}"
    );
    let binary = build_like_the_dockerfile(&flags);
    if std::fs::read(test_build).unwrap() != test_binary {
        put_back(test_build, &test_binary);
    }

    let commands = subcommands(&binary);
    for c in ["controller", "agent", "uninstall", "crds"] {
        assert!(commands.iter().any(|x| x == c), "{c} missing: {commands:?}");
    }
    assert!(
        !commands.iter().any(|x| x == "lab"),
        "the image's binary offers `lab`: {commands:?}"
    );
    let out = Command::new(&binary)
        .args(["lab", "demo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unrecognized subcommand 'lab'"), "{stderr}");

    assert_eq!(
        markers_in(&binary),
        Vec::<&str>::new(),
        "lab or stand-in code in {}",
        binary.display()
    );
    std::fs::remove_file(&binary).unwrap();
}
