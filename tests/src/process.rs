//! The server binary as a process, for tests that need a real one (killed with SIGKILL, its logs
//! read, TLS configured): importing a town from CSV, starting it, and the seed of randomised
//! tests. The binary's path comes from the calling test (`env!("CARGO_BIN_EXE_gridlink-server")`
//! in the server's tests).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{PASSWORD, PEOPLE, org};

/// The seed of a randomised test: `GRIDLINK_SEED` to replay one, else a fresh one. It is printed,
/// so a failure says how to replay it.
pub fn seed_from_env() -> u64 {
    let seed = std::env::var("GRIDLINK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with GRIDLINK_SEED={seed})");
    seed
}

/// The test town ([`PEOPLE`] in its units) as the two CSV files `gridlink-server import` reads:
/// (units, people).
pub fn town_csv() -> (String, String) {
    let mut units = String::from("code,name,kind,parent,department_key\n");
    for u in org() {
        let parent = u.parent.as_ref().map(|p| p.to_string()).unwrap_or_default();
        units.push_str(&format!("{},{},{},{parent},{}\n", u.code, u.name, u.kind.label(), u.department_key.unwrap_or_default()));
    }
    let mut people = String::from("id,name,role,unit,password\n");
    for (id, role, unit) in PEOPLE {
        people.push_str(&format!("{id},测试{id},{role},{unit},{PASSWORD}\n"));
    }
    (units, people)
}

/// Imports `units` or `people` CSV text into the database (a SQLite file, or a PostgreSQL URL)
/// with the binary's `import` command.
pub fn import_csv(bin: &Path, db: &Path, what: &str, csv: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let file = if db.to_string_lossy().contains("://") {
        scratch.path().join(format!("{what}.csv"))
    } else {
        db.with_extension(format!("{what}.csv"))
    };
    std::fs::write(&file, csv).unwrap();
    let out = Command::new(bin).args(["import", "--db"]).arg(db).arg(what).arg(&file).output().unwrap();
    assert!(out.status.success(), "import {what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Imports the test town ([`town_csv`]).
pub fn import_town(bin: &Path, db: &Path) {
    let (units, people) = town_csv();
    import_csv(bin, db, "units", &units);
    import_csv(bin, db, "people", &people);
}

/// How to start the server.
#[derive(Debug, Default)]
pub struct Serve<'a> {
    /// Extra arguments after `serve --listen 127.0.0.1:0 --db <db>`.
    pub args: Vec<&'a OsStr>,
    /// Environment; `GRIDLINK_LOG` is `warn` unless set here.
    pub env: Vec<(&'a str, &'a str)>,
    /// Keep the server's standard error for the test to read (else it is dropped).
    pub stderr: bool,
}

/// Starts `bin serve` on a free port of 127.0.0.1 and returns the process with the address it
/// printed (`http://…` or `https://…`). Its standard output after that line stays piped.
pub fn serve(bin: &Path, db: &Path, how: Serve<'_>) -> (Child, String, BufReader<std::process::ChildStdout>) {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"]).arg(db).args(&how.args).env("GRIDLINK_LOG", "warn");
    for (k, v) in &how.env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(if how.stderr { Stdio::piped() } else { Stdio::null() }).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Log lines the start wrote (a warning, say) come before the address.
    let mut seen = String::new();
    let base = loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("the server stopped before it listened: {seen}");
        }
        let base = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        if base.starts_with("http://127.0.0.1:") || base.starts_with("https://127.0.0.1:") {
            break base;
        }
        seen.push_str(&line);
    };
    (child, base, out)
}

/// Runs a Node script in `dir` that asks the test for steps: it writes `@@{"cmd": …, "arg": …}`
/// lines on its standard output, each answered on its standard input by one JSON line from `step`,
/// and reports each check it passed as an `ok …` line (every other line is printed). Returns the
/// number of checks passed; panics, naming `what`, when the script fails.
pub fn run_node_script(
    dir: &Path,
    script: &str,
    env: &[(&str, &OsStr)],
    what: &str,
    mut step: impl FnMut(&str, &serde_json::Value) -> serde_json::Value,
) -> usize {
    use std::io::Write;
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is installed");
    let mut to_script = child.stdin.take().unwrap();
    let from_script = BufReader::new(child.stdout.take().unwrap());
    let mut passed = 0;
    for line in from_script.lines() {
        let line = line.unwrap();
        if let Some(req) = line.strip_prefix("@@") {
            let req: serde_json::Value = serde_json::from_str(req).unwrap();
            let reply = step(req["cmd"].as_str().unwrap_or_default(), &req["arg"]);
            writeln!(to_script, "{reply}").unwrap();
            to_script.flush().unwrap();
        } else {
            passed += usize::from(line.starts_with("ok "));
            println!("{line}");
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{what} failed (see its output above)");
    passed
}
