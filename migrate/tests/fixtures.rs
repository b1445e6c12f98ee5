//! The real binary against the cases under `tests/fixtures/`: each directory holds MetalLB
//! manifests (`input.yaml` or `input.json`), optionally the arguments (`args`, default: the input
//! file; `-` or no arguments read the input from standard input), and what is expected: the
//! FerroLB objects on stdout (`output.yaml`), the report on stderr (`report.txt`) and the exit
//! code (`exit-code`). `FERROLB_BLESS=1 cargo test -p ferrolb-migrate --test fixtures` rewrites
//! the expectations from what the binary does; review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_ferrolb-migrate");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn input_file(case: &Path) -> Option<String> {
    ["input.yaml", "input.json"]
        .into_iter()
        .find(|name| case.join(name).exists())
        .map(str::to_owned)
}

fn run_case(case: &Path) -> Run {
    let input = input_file(case);
    let args: Vec<String> = match std::fs::read_to_string(case.join("args")) {
        Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
        Err(_) => input.iter().cloned().collect(),
    };
    let reads_stdin = args.is_empty() || args.iter().any(|a| a == "-");
    let stdin_text = match (&input, reads_stdin) {
        (Some(input), true) => Some(std::fs::read_to_string(case.join(input)).unwrap()),
        _ => None,
    };
    let mut child = Command::new(BINARY)
        .args(&args)
        .current_dir(case)
        // --from-cluster cases name their kubeconfig; nothing of the environment may leak in.
        .env_remove("KUBECONFIG")
        .env("HOME", case)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = stdin_text {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        code: output.status.code().unwrap_or(-1),
    }
}

fn expected(case: &Path, file: &str) -> String {
    std::fs::read_to_string(case.join(file)).unwrap_or_default()
}

#[test]
fn every_fixture_gives_its_expected_output_report_and_exit_code() {
    let bless = std::env::var_os("FERROLB_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let run = run_case(case);
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if bless {
            std::fs::write(case.join("output.yaml"), &run.stdout).unwrap();
            std::fs::write(case.join("report.txt"), &run.stderr).unwrap();
            std::fs::write(case.join("exit-code"), format!("{}\n", run.code)).unwrap();
            continue;
        }
        let code: i32 = expected(case, "exit-code").trim().parse().unwrap();
        if run.code != code {
            failures.push(format!(
                "{name}: exit code {} instead of {code}\n{}",
                run.code, run.stderr
            ));
        }
        if run.stdout != expected(case, "output.yaml") {
            failures.push(format!("{name}: stdout differs:\n{}", run.stdout));
        }
        if run.stderr != expected(case, "report.txt") {
            failures.push(format!("{name}: stderr differs:\n{}", run.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The exit codes the cases must cover, so that no kind of outcome goes untested.
#[test]
fn fixtures_cover_every_exit_code() {
    let mut codes: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path().join("exit-code")).ok())
        .map(|code| code.trim().to_owned())
        .collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes, ["0", "1", "2"]);
}

#[test]
fn output_of_every_fixture_reads_back_as_ferrolb_objects() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let case = entry.unwrap().path();
        let output = expected(&case, "output.yaml");
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&output).unwrap();
        for document in documents {
            match document["kind"].as_str() {
                Some("IPAddressPool") => {
                    let pool: ferrolb_crds::IPAddressPool =
                        serde_json::from_value(document).unwrap();
                    assert!(pool.spec.address_set().is_ok(), "{case:?}: {pool:?}");
                }
                Some("L2Advertisement") => {
                    let _: ferrolb_crds::L2Advertisement =
                        serde_json::from_value(document).unwrap();
                }
                Some("BGPPeer") => {
                    let peer: ferrolb_crds::BGPPeer = serde_json::from_value(document).unwrap();
                    assert!(peer.spec.settings().is_ok(), "{case:?}: {peer:?}");
                }
                Some("BGPAdvertisement") => {
                    let _: ferrolb_crds::BGPAdvertisement =
                        serde_json::from_value(document).unwrap();
                }
                other => panic!("{case:?}: unexpected kind {other:?}"),
            }
        }
    }
}

#[test]
fn help_explains_the_exit_codes_and_version_is_printed() {
    let help = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "Exit codes:",
        "  0  ",
        "  1  ",
        "  2  ",
        "--from-cluster",
        "--kubeconfig",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let version = Command::new(BINARY).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("ferrolb-migrate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let output = Command::new(BINARY)
        .args(["--from-cluster", "a.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_empty_input_converts_nothing_and_succeeds() {
    let mut child = Command::new(BINARY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrote 0 IPAddressPools"));
}
