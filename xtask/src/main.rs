//! Developer commands: `cargo xtask test` (what CI runs) and `cargo xtask bench` (the figures in
//! docs/benchmarks.md).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => bench(),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|bench>\n  test   format, lint and run every test of the workspace\n  bench  run the benchmarks and print their medians"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program).args(args).current_dir(root()).status().map_err(|e| format!("{program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{program} {}` failed ({status})", args.join(" "))) }
}

fn has_nextest() -> bool {
    Command::new("cargo").args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn test() -> Result<(), String> {
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    if has_nextest() {
        run("cargo", &["nextest", "run", "--workspace", "--no-tests=pass", "--no-fail-fast"])?;
    } else {
        run("cargo", &["test", "--workspace", "--no-fail-fast", "--all-targets"])?;
    }
    run("cargo", &["test", "--workspace", "--doc"])
}

/// Benchmarks with their targets (median, milliseconds).
const BENCHES: &[(&str, &str, f64)] = &[
    ("create_incident_durable", "create an incident, durable commit", 5.0),
    ("open_10k_and_list_50_open_tasks", "open a 10,000-record store, list 50 open tasks", 20.0),
    ("my_tasks_50_of_10k", "my tasks (50) among 10,000 records", 20.0),
    ("search_trigram_10k", "full-text search, 5 Chinese characters, 10,000 records", 30.0),
    ("search_two_chars_10k", "full-text search, 2 Chinese characters, 10,000 records", 30.0),
];

fn bench() -> Result<(), String> {
    run("cargo", &["bench", "-p", "gridlink-core", "--bench", "store"])?;
    println!("\n| benchmark | median | target |\n|---|---|---|");
    for (name, what, target) in BENCHES {
        let path = root().join("target/criterion").join(name).join("new/estimates.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let median_ns = median_of(&text).ok_or_else(|| format!("{}: no median", path.display()))?;
        let ms = median_ns / 1e6;
        let verdict = if ms < *target { "met" } else { "MISSED" };
        println!("| {what} | {ms:.3} ms | < {target} ms ({verdict}) |");
    }
    Ok(())
}

/// The median point estimate (ns) from criterion's estimates.json.
fn median_of(json: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(json).ok()?.pointer("/median/point_estimate")?.as_f64()
}
