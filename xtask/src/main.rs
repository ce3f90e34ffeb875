//! Developer commands: `cargo xtask test` (what CI runs) and `cargo xtask bench` (the figures in
//! docs/benchmarks.md).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => bench(),
        Some("bindings") => bindings().map(|_| ()),
        Some("package") => package(args.get(1).map(String::as_str) == Some("--test")).map(|_| ()),
        Some("fuzz") => fuzz(args.get(1).and_then(|s| s.parse().ok()).unwrap_or(FUZZ_SECONDS)),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|bench|bindings|package [--test]|fuzz [seconds]>\n  test      format, lint and run every test (Rust, Python and Kotlin bindings), then fuzz briefly\n  fuzz      run every cargo-fuzz target for the given seconds each (default 20)\n  bench     run the device benchmarks and the sync/load figures (`bench quick` for a small run)\n  bindings  generate Kotlin, Swift and Python bindings into target/bindings/\n  package   build the Debian package of the server (cargo-deb) into target/debian/; --test builds it unoptimised and installs and runs it (root)"
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
    run_with(program, args, &[])
}

/// [`run`] with extra environment variables.
fn run_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status =
        Command::new(program).args(args).envs(env.iter().copied()).current_dir(root()).status().map_err(|e| format!("{program}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{program} {}` failed ({status})", args.join(" "))) }
}

/// A private PostgreSQL cluster for the tests (`xtask/pg.sh`), stopped and deleted when dropped.
struct PgCluster {
    /// Its directory, when this run started it.
    dir: Option<String>,
    url: String,
}

impl PgCluster {
    fn start() -> Result<Self, String> {
        let out = Command::new("bash").arg("xtask/pg.sh").arg("start").current_dir(root()).output().map_err(|e| format!("pg.sh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().split_once(' ') {
            Some((dir, url)) if out.status.success() => {
                eprintln!("PostgreSQL for the tests: {url}");
                Ok(Self { dir: Some(dir.to_owned()), url: url.to_owned() })
            }
            _ => Err(format!("could not start PostgreSQL for the tests: {}", String::from_utf8_lossy(&out.stderr))),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new("bash").args(["xtask/pg.sh", "stop", dir]).current_dir(root()).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn has_cargo_deb() -> bool {
    Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// Builds the server's Debian package; with `test`, from the unoptimised build the tests already
/// made (the package's content and scripts are what is tested), then installs and runs it.
fn package(test: bool) -> Result<PathBuf, String> {
    let out = root().join("target/debian");
    let mut args = vec!["deb", "-p", "gridlink-server", "--output", "target/debian/"];
    if test {
        args.extend(["--profile", "dev", "--no-strip"]);
    }
    run("cargo", &args)?;
    let deb = std::fs::read_dir(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .ok_or("cargo deb made no package")?;
    eprintln!("package: {}", deb.display());
    if test {
        run("bash", &["xtask/package-test.sh", &deb.display().to_string()])?;
    }
    Ok(deb)
}

fn has_nextest() -> bool {
    Command::new("cargo").args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn test() -> Result<(), String> {
    // What the tests need beyond Rust (JNA, Chromium and a Chinese font, sqlite3, playwright,
    // automerge-repo, the Kotlin compiler, cargo-fuzz, pytest, georeport, PostgreSQL), installed when
    // missing.
    if std::env::var_os("GRIDLINK_SKIP_SETUP").is_none() {
        run("bash", &["xtask/setup.sh"])?;
    }
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The storage conformance suite runs on SQLite and on PostgreSQL: a private cluster for the
    // run (unless GRIDLINK_TEST_PG_URL names a server already), which the suite must then use.
    let cluster = match std::env::var("GRIDLINK_TEST_PG_URL") {
        Ok(url) => PgCluster { dir: None, url },
        Err(_) => PgCluster::start()?,
    };
    let pg = [("GRIDLINK_TEST_PG_URL", cluster.url.as_str()), ("GRIDLINK_REQUIRE_PG", "1")];
    if has_nextest() {
        run_with("cargo", &["nextest", "run", "--workspace", "--no-tests=pass", "--no-fail-fast"], &pg)?;
    } else {
        run_with("cargo", &["test", "--workspace", "--no-fail-fast", "--all-targets"], &pg)?;
    }
    // The end-to-end suite again with the whole server on PostgreSQL, each test server on a
    // database of its own in the cluster. The every-list check stays on SQLite: its bulk town
    // takes minutes to seed over PostgreSQL, and both backends' list SQL is in the conformance suite.
    let on_pg = [("GRIDLINK_TEST_SERVER_PG", cluster.url.as_str())];
    const EVERY_LIST: &str = "every_list_is_complete_for_every_role";
    if has_nextest() {
        // `--workspace` with a package filter, not `-p`: the same feature set as the run above,
        // so its test binaries are reused instead of built a second time (minutes, gigabytes).
        let filter = format!("package(gridlink-tests) and not test({EVERY_LIST})");
        run_with("cargo", &["nextest", "run", "--workspace", "--no-fail-fast", "-E", &filter], &on_pg)?;
    } else {
        run_with("cargo", &["test", "-p", "gridlink-tests", "--no-fail-fast", "--", "--skip", EVERY_LIST], &on_pg)?;
    }
    drop(cluster);
    run("cargo", &["test", "--workspace", "--doc"])?;
    let out = bindings()?;
    run("python3", &["-m", "pytest", "-q", "bindings/tests/python"])?;
    kotlin_test(&out)?;
    // The Debian package, installed and started as its unit says: needs root (CI runs as root).
    if is_root() && has_cargo_deb() {
        package(true)?;
    } else {
        eprintln!("package test skipped: it needs root and cargo-deb (`cargo install --locked cargo-deb@3.8.0`; xtask/setup.sh does)");
    }
    // The sync benchmark, small and unoptimised: it must keep working, and its byte counts must not
    // grow more than 2 % over tests/bench/bytes-quick.json (times mean nothing here and are not checked).
    run(&root().join("target/debug/sync_bench").display().to_string(), &["quick"])?;
    if has_cargo_fuzz() {
        fuzz(FUZZ_SECONDS)
    } else {
        eprintln!("cargo-fuzz is not installed: fuzzing skipped (`cargo install --locked cargo-fuzz@0.13.2`; bash .ci/run does)");
        Ok(())
    }
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS: u32 = 20;

/// The cargo-fuzz targets in `fuzz/fuzz_targets`.
const FUZZ_TARGETS: &[&str] = &["sync_request", "doc_load", "attachment_chunk", "import_files", "open311", "automerge_repo_message"];

fn has_cargo_fuzz() -> bool {
    Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// Runs every fuzz target for `seconds`, on the stable toolchain without a sanitizer (`-s none`),
/// starting from the checked-in seeds in `fuzz/seeds/<target>`. A crash fails; its input is
/// saved in `fuzz/artifacts/<target>/` to become a regression test.
fn fuzz(seconds: u32) -> Result<(), String> {
    let time = format!("-max_total_time={seconds}");
    for t in FUZZ_TARGETS {
        let corpus = root().join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let corpus = corpus.display().to_string();
        let seeds = root().join("fuzz/seeds").join(t).display().to_string();
        run("cargo", &["fuzz", "run", "-s", "none", "--fuzz-dir", "fuzz", t, &corpus, &seeds, "--", &time, "-rss_limit_mb=2048"])?;
    }
    Ok(())
}

/// Builds the workspace and generates the bindings; returns the output folder.
fn bindings() -> Result<PathBuf, String> {
    run("cargo", &["build", "--workspace"])?;
    let out = root().join("target/bindings");
    let lib = root().join("target/debug/libgridlink_ffi.so");
    let bindgen = root().join("target/debug/uniffi-bindgen");
    for (lang, extra) in [("python", None), ("kotlin", Some("--no-format")), ("swift", None)] {
        let dir = out.join(lang);
        let mut args = vec![
            "generate".to_owned(),
            lib.display().to_string(),
            "--language".into(),
            lang.into(),
            "--out-dir".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(bindgen.to_str().ok_or("path")?, &args)?;
    }
    std::fs::copy(&lib, out.join("python/libgridlink_ffi.so")).map_err(|e| format!("copy library: {e}"))?;
    eprintln!("bindings in {}", out.display());
    Ok(out)
}

/// The Kotlin compiler (npm `kotlin-compiler`): `KOTLIN_HOME`, else the copy `.ci/run` unpacks.
fn kotlin_home() -> Result<PathBuf, String> {
    let home = std::env::var_os("KOTLIN_HOME").map(PathBuf::from).unwrap_or_else(|| root().join("target/tools/kotlin/package"));
    if home.join("bin/kotlinc-jvm").exists() {
        Ok(home)
    } else {
        Err(format!("Kotlin compiler not found at {} (run `bash .ci/run` once, or set KOTLIN_HOME)", home.display()))
    }
}

/// Compiles the generated Kotlin, the kotlin-shell and its JVM test, and runs the test.
fn kotlin_test(out: &Path) -> Result<(), String> {
    let k = kotlin_home()?;
    let jna = "/usr/share/java/jna.jar";
    if !Path::new(jna).exists() {
        return Err("JNA not found: apt-get install libjna-java".into());
    }
    let coroutines = k.join("lib/kotlinx-coroutines-core-jvm.jar");
    let stdlib = k.join("lib/kotlin-stdlib.jar");
    let jar = out.join("kotlin-shell-test.jar");
    let mut sources = vec![out.join("kotlin").display().to_string()];
    for dir in ["mobile-shell/kotlin-shell/src", "mobile-shell/kotlin-shell/test"] {
        sources.push(root().join(dir).display().to_string());
    }
    let cp = format!("{}:{jna}", coroutines.display());
    let mut args = vec!["-cp", &cp, "-d"];
    let jar_s = jar.display().to_string();
    args.push(&jar_s);
    args.extend(sources.iter().map(String::as_str));
    run(k.join("bin/kotlinc-jvm").to_str().ok_or("path")?, &args)?;
    let run_cp = format!("{jar_s}:{}:{}:{jna}", stdlib.display(), coroutines.display());
    let lib_path = format!("-Djna.library.path={}", root().join("target/debug").display());
    let server = root().join("target/debug/gridlink-server").display().to_string();
    let status = Command::new("java")
        .args([lib_path.as_str(), "-cp", &run_cp, "gridlink.shell.ShellTestKt"])
        .env("GRIDLINK_SERVER_BIN", &server)
        .current_dir(root())
        .status()
        .map_err(|e| format!("java: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("Kotlin shell test failed ({status})")) }
}

/// Benchmarks with their targets (median, milliseconds).
const BENCHES: &[(&str, &str, f64)] = &[
    ("create_incident_durable", "create an incident, durable commit", 5.0),
    ("open_10k_and_list_50_open_tasks", "open a 10,000-record store, list 50 open tasks", 20.0),
    ("my_tasks_50_of_10k", "my tasks (50) among 10,000 records", 20.0),
    ("search_trigram_10k", "full-text search, 5 Chinese characters, 10,000 records", 30.0),
    ("search_two_chars_10k", "full-text search, 2 Chinese characters, 10,000 records", 30.0),
    ("fresh_device_takes_2000_records", "a fresh device takes 2,000 records (saved documents, no network)", 500.0),
];

fn bench() -> Result<(), String> {
    run("cargo", &["bench", "-p", "gridlink-core", "--bench", "store"])?;
    run("cargo", &["bench", "-p", "gridlink-core", "--bench", "bootstrap"])?;
    println!("\n| benchmark | median | target |\n|---|---|---|");
    for (name, what, target) in BENCHES {
        let path = root().join("target/criterion").join(name).join("new/estimates.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let median_ns = median_of(&text).ok_or_else(|| format!("{}: no median", path.display()))?;
        let ms = median_ns / 1e6;
        let verdict = if ms < *target { "met" } else { "MISSED" };
        println!("| {what} | {ms:.3} ms | < {target} ms ({verdict}) |");
    }
    // The console's lists in a town of 20,000 records (first pages, target < 20 ms each).
    run("cargo", &["bench", "-p", "gridlink-server", "--bench", "lists"])?;
    // Sync, load and rural-link figures against the release server binary, and the same
    // workloads through automerge-repo (Node).
    // `install` rather than `ci`: see .ci/run (cbor-x's optional helpers are not on the registry).
    run("npm", &["install", "--silent", "--no-audit", "--no-fund", "--prefix", "tests/automerge-repo"])?;
    run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "gridlink-server",
            "-p",
            "gridlink-tests",
            "--bin",
            "gridlink-server",
            "--bin",
            "sync_bench",
            "--bin",
            "amrepo_bench",
        ],
    )?;
    let quick = std::env::args().any(|a| a == "quick");
    let bench = root().join("target/release/sync_bench").display().to_string();
    run(&bench, if quick { &["quick"] } else { &[] })?;
    // A JavaScript peer opening records through the automerge-repo endpoint, beside a phone.
    let amrepo = root().join("target/release/amrepo_bench").display().to_string();
    run(&amrepo, &[if quick { "100" } else { "500" }])
}

/// The median point estimate (ns) from criterion's estimates.json.
fn median_of(json: &str) -> Option<f64> {
    serde_json::from_str::<serde_json::Value>(json).ok()?.pointer("/median/point_estimate")?.as_f64()
}
