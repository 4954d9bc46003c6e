//! Running a command in a lab network namespace, for the lab test suites
//! (`lab_api`, `lab_e2e`, `gateway_ha`).
use std::path::Path;
use std::process::Command;

/// The standard output of `cmd` (split on whitespace) run inside the
/// network namespace at `ns`; failures show as missing output.
pub fn sh_in(ns: &Path, cmd: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(cmd.split_whitespace())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
