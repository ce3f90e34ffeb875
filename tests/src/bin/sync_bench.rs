//! Sync and server-load figures (issue 7): the real server binary as a child process on
//! 127.0.0.1, real phones (core `Client` + `SyncEngine`) in this process, every byte counted by a
//! TCP proxy in between. The same records, as Automerge documents, then go through a reference
//! automerge-repo 2.5 server and clients (`tests/automerge-repo/bench.mjs`, Node) for the
//! side-by-side table. Prints figures; fails only if something breaks, never on speed.
//!
//! `cargo xtask bench` builds in release and runs it; alone:
//! `npm install --prefix tests/automerge-repo && cargo build --release -p gridlink-server -p gridlink-tests
//! && target/release/sync_bench [quick]`.
//!
//! The load alone, with the server on another machine (so that the load's own CPU does not
//! share the server's cores): `sync_bench town <dir>` writes the bench town's database there,
//! `gridlink-server serve` runs on it over there, and `GRIDLINK_BENCH_SERVERS=http://host:port[,…]
//! sync_bench load 1000` drives it from here (without the server's CPU and memory figures).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use gridlink_core::sync::engine::HttpRequest;
use gridlink_core::sync::protocol::{self, DocChanges, DocId};
use gridlink_core::sync::{HttpTransport, PROTOCOL_VERSION, SyncEngine, SyncRequest, SyncResponse, Transport};
use gridlink_core::{Client, NewIncident};
use gridlink_tests::process;
use serde_bytes::ByteBuf;

const PASSWORD: &str = "bench-password-1";
const TOWN: &str = "532331101";
const VILLAGE: &str = "532331101201";

fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("gridlink-server");
    assert!(bin.exists(), "build the server first: cargo build --release -p gridlink-server");
    bin
}

/// A new, empty database for the bench: SQLite in `dir`, or a new database of the PostgreSQL
/// server `GRIDLINK_BENCH_PG` names.
fn new_db(dir: &Path) -> PathBuf {
    match std::env::var("GRIDLINK_BENCH_PG") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("gl_bench_{:012x}", rand::random::<u64>() >> 16);
            PathBuf::from(gridlink_server::storage::PgStorage::create_database(&admin, &name).unwrap())
        }
        _ => dir.join("town.db"),
    }
}

/// Imports units and people (CSV text) into `db` with the server's own `import` command.
fn import(db: &Path, units: String, people: String) {
    process::import_csv(&server_bin(), db, "units", &units);
    process::import_csv(&server_bin(), db, "people", &people);
}

/// The town for the bench: one village with `grids` grids, a grid member per grid, a station.
fn make_town(dir: &Path, grids: usize) -> PathBuf {
    let db = new_db(dir);
    let mut units = format!(
        "code,name,kind,parent,department_key\n{TOWN},广通镇,镇,,\n{VILLAGE},广通社区,村,{TOWN},\n{VILLAGE}-01,一组,组,{VILLAGE},\n"
    );
    let mut people = format!(
        "id,name,role,unit,password\nstation,站长,便民服务站代办员,{VILLAGE},{PASSWORD}\ncenter,坐席,综治中心工作人员,{TOWN},{PASSWORD}\n"
    );
    for g in 1..=grids {
        units.push_str(&format!("{VILLAGE}-01-{g:02},{g}号网格,网格,{VILLAGE}-01,\n"));
        people.push_str(&format!("g{g},网格员{g},网格员,{VILLAGE}-01-{g:02},{PASSWORD}\n"));
    }
    import(&db, units, people);
    db
}

/// The county for the county load (issue 18): the county 532331 above `towns` towns, each with
/// one village of `grids` grids and a grid member per grid, `t{town}g{grid}`; each town has its
/// center operator. Town `t` is 5323311{t:02}.
fn make_county(dir: &Path, towns: usize, grids: usize) -> PathBuf {
    let db = new_db(dir);
    let county = &TOWN[..6];
    let mut units = format!("code,name,kind,parent,department_key\n{county},禄丰市,县,,\n");
    let mut people = format!("id,name,role,unit,password\nxian,县坐席,县社会治理中心坐席,{county},{PASSWORD}\n");
    for t in 1..=towns {
        let town = format!("{county}1{t:02}");
        let village = format!("{town}201");
        units.push_str(&format!("{town},第{t}镇,镇,{county},\n{village},第{t}镇社区,村,{town},\n{village}-01,一组,组,{village},\n"));
        people.push_str(&format!("t{t}center,第{t}镇坐席,综治中心工作人员,{town},{PASSWORD}\n"));
        for g in 1..=grids {
            units.push_str(&format!("{village}-01-{g:02},{g}号网格,网格,{village}-01,\n"));
            people.push_str(&format!("t{t}g{g},网格员{t}-{g},网格员,{village}-01-{g:02},{PASSWORD}\n"));
        }
    }
    import(&db, units, people);
    db
}

struct Server {
    /// None: a server this bench did not start (`GRIDLINK_BENCH_SERVERS`), perhaps on another machine.
    child: Option<Child>,
    base: String,
}

impl Server {
    /// A server process on `db`, its photos in `data` (shared by the nodes of one database).
    fn start(db: &Path, data: &Path) -> Self {
        let how = process::Serve { args: vec!["--data-dir".as_ref(), data.as_os_str()], ..Default::default() };
        let (child, base, _) = process::serve(&server_bin(), db, how);
        Server { child: Some(child), base }
    }

    /// The servers `GRIDLINK_BENCH_SERVERS` names (base URLs, comma-separated), if it is set.
    fn given() -> Option<Vec<Self>> {
        let list = std::env::var("GRIDLINK_BENCH_SERVERS").ok().filter(|v| !v.trim().is_empty())?;
        Some(list.split(',').map(|base| Server { child: None, base: base.trim().trim_end_matches('/').to_owned() }).collect())
    }

    /// CPU seconds the server process used so far (user + system); None for a server elsewhere.
    fn cpu_here_s(&self) -> Option<f64> {
        self.child.as_ref().map(|c| cpu_s(&format!("/proc/{}/stat", c.id())))
    }

    /// [`Server::cpu_here_s`] of a server this bench started.
    fn cpu_s(&self) -> f64 {
        self.cpu_here_s().expect("a server this bench started")
    }

    /// Resident memory in MiB: now, its anonymous part (heap, stacks: the rest is file pages,
    /// mostly the database that SQLite maps), and the peak.
    fn memory_mib(&self) -> (f64, f64, f64) {
        let child = self.child.as_ref().expect("a server this bench started");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let kib = |key: &str| -> f64 {
            status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse::<f64>().unwrap()
        };
        (kib("VmRSS:") / 1024.0, kib("RssAnon:") / 1024.0, kib("VmHWM:") / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn phone(dir: &Path, name: &str, base: &str, user: &str) -> (Client, SyncEngine) {
    let mut c = Client::open(dir.join(format!("{name}.db"))).unwrap();
    let e = SyncEngine::http(base);
    e.login(&mut c, user, PASSWORD, "压测").unwrap();
    (c, e)
}

/// A grid member's report. The texts vary as real ones do: a few hundred combinations of place,
/// problem and remark plus a time, so that no figure rests on every record saying the same thing.
fn report(n: usize) -> NewIncident {
    const PLACES: [&str; 10] = [
        "村口桥头",
        "广通社区菜市场",
        "罗川村二组",
        "新街小学门口",
        "老街农贸市场",
        "河堤步道",
        "镇卫生院后门",
        "三组晒谷场",
        "幸福小区3栋",
        "国道路口",
    ];
    const PROBLEMS: [(&str, &str); 8] = [
        ("垃圾堆积", "生活垃圾堆积,已有异味"),
        ("垃圾桶满溢", "垃圾桶满溢,未及时清运"),
        ("建筑垃圾", "建筑垃圾随意倾倒"),
        ("污水外溢", "污水外溢,路面湿滑"),
        ("杂物堆放", "绿化带内堆放杂物"),
        ("焚烧秸秆", "有人焚烧秸秆,烟雾较大"),
        ("占道堆放", "占道堆放建材,车辆难以通行"),
        ("排水沟堵塞", "排水沟堵塞,雨天积水"),
    ];
    const REMARKS: [&str; 5] = ["影响群众出行。", "周边居民反映强烈。", "存在安全隐患。", "影响村容村貌。", "请尽快安排处理。"];
    let place = PLACES[n % PLACES.len()];
    let (short, problem) = PROBLEMS[(n / 3) % PROBLEMS.len()];
    let remark = REMARKS[(n / 7) % REMARKS.len()];
    NewIncident {
        category: "0501".into(),
        title: format!("{place}{short}"),
        description: format!("{place}{problem},{remark}巡查时间{}时{:02}分。", 7 + n % 11, n * 7 % 60),
        address: format!("{place}附近{}米", n % 200),
        note: "巡查发现".into(),
        ..Default::default()
    }
}

/// Deflated size of bytes: the floor for sending them.
fn deflated(bytes: &[u8]) -> usize {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap().len()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Bytes that crossed a proxy: TCP payload, so HTTP headers count too.
#[derive(Default)]
struct Wire {
    up: AtomicUsize,
    down: AtomicUsize,
}

impl Wire {
    /// The bytes each way since the last call.
    fn take(&self) -> (usize, usize) {
        (self.up.swap(0, Ordering::SeqCst), self.down.swap(0, Ordering::SeqCst))
    }
}

/// A slow link: a fixed delay each way, a bandwidth cap, and stalls standing for lost packets
/// being resent.
#[derive(Clone, Copy)]
struct Link {
    one_way: Duration,
    bytes_per_s: f64,
    stall_every: usize,
}

/// A TCP proxy in front of the server that counts the bytes each way and, given a `Link`,
/// imitates a rural connection. Returns the proxy's base URL.
fn proxy(target: &str, link: Option<Link>, wire: Arc<Wire>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(&target).unwrap();
            let directions = [(client.try_clone().unwrap(), server.try_clone().unwrap(), true), (server, client, false)];
            for (mut from, mut to, upward) in directions {
                let wire = wire.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1460];
                    let mut segments = 0usize;
                    let mut first = true;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Some(link) = link {
                            if first {
                                std::thread::sleep(link.one_way);
                                first = false;
                            }
                            segments += 1;
                            let mut wait = Duration::from_secs_f64(n as f64 / link.bytes_per_s);
                            if link.stall_every > 0 && segments.is_multiple_of(link.stall_every) {
                                wait += 2 * link.one_way; // a lost segment costs a round trip to resend
                            }
                            std::thread::sleep(wait);
                        }
                        let count = if upward { &wire.up } else { &wire.down };
                        count.fetch_add(n, Ordering::SeqCst);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    format!("http://{addr}")
}

/// CPU seconds (user + system) from a `/proc/…/stat` file; the clock ticks 100 times a second.
fn cpu_s(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// CPU seconds the calling thread has used.
fn thread_cpu_s() -> f64 {
    cpu_s("/proc/thread-self/stat")
}

/// One record's whole Automerge document, rebuilt from the changes a phone holds.
fn document(phone: &Client, id: &str) -> automerge::AutoCommit {
    let mut doc = automerge::AutoCommit::new();
    doc.load_incremental(&phone.changes(id).unwrap().concat()).unwrap();
    doc
}

/// Changes as Automerge encodes them before its own per-change deflate: what a floor compresses.
fn uncompressed(changes: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    changes.into_iter().flat_map(|c| automerge::Change::from_bytes(c).unwrap().raw_bytes().to_vec()).collect()
}

/// Writes records as Automerge documents for the automerge-repo side, one file each.
fn export(phone: &Client, ids: &[String], dir: &Path, first: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (n, id) in ids.iter().enumerate() {
        std::fs::write(dir.join(format!("{:05}.bin", first + n)), document(phone, id).save()).unwrap();
    }
}

/// Figures of one workload as the automerge-repo script printed them.
type Reference = std::collections::HashMap<String, serde_json::Value>;

/// Runs the automerge-repo side on the exported documents, if Node and its packages are there.
fn automerge_repo(work: &Path) -> Result<Reference, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("automerge-repo");
    if !script.join("node_modules/@automerge/automerge-repo").exists() {
        return Err(format!("not run: `npm install --prefix {}` first", script.display()));
    }
    let out = Command::new("node")
        .arg(script.join("bench.mjs"))
        .arg(work)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("not run: node: {e}"))?;
    if !out.status.success() {
        return Err(format!("failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("@@"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["workload"].as_str().unwrap().to_owned(), v))
        .collect())
}

/// One workload's Gridlink figures.
struct Figures {
    workload: &'static str,
    label: String,
    wall: f64,
    rounds: usize,
    body: (usize, usize),
    wire: (usize, usize),
    cpu: f64,
    /// CPU time the phone spent on the round: with the bytes, the energy proxy.
    phone_cpu: Option<f64>,
    floor: String,
}

/// Prints Gridlink's and automerge-repo's figures for the same workloads, with ratios.
fn side_by_side(figures: &[Figures], reference: &Reference, (peak, stored): (f64, i64)) {
    println!(
        "\n## Side by side: Gridlink vs automerge-repo 2.5.6 (same Automerge documents; wire bytes through the same kind of counting proxy)\n"
    );
    println!("| workload | system | wall | bytes up | bytes down | round trips | server CPU |");
    println!("|---|---|---|---|---|---|---|");
    for f in figures {
        let Some(r) = reference.get(f.workload) else { continue };
        let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let (rup, rdown) = (num("bytes_up"), num("bytes_down"));
        let rounds = if f.workload == "d" { format!("{} ({} devices)", f.rounds, r["devices"]) } else { f.rounds.to_string() };
        let their_rounds = if f.workload == "d" {
            format!("{} per device; p50 {:.2} s, p99 {:.2} s", num("round_trips"), num("p50_s"), num("p99_s"))
        } else {
            num("round_trips").to_string()
        };
        println!("| ({}) | Gridlink | {:.3} s | {} | {} | {rounds} | {:.2} s |", f.workload, f.wall, f.wire.0, f.wire.1, f.cpu);
        println!("| | automerge-repo | {:.3} s | {rup} | {rdown} | {their_rounds} | {:.2} s |", num("wall_s"), num("server_cpu_s"));
        println!(
            "| | ratio (automerge-repo ÷ Gridlink) | {:.1}× | {:.1}× | {:.1}× | | {:.1}× |",
            num("wall_s") / f.wall,
            rup / f.wire.0 as f64,
            rdown / f.wire.1 as f64,
            num("server_cpu_s") / f.cpu
        );
    }
    if let Some(m) = reference.get("memory") {
        println!(
            "\nServer peak memory after the four workloads: Gridlink {peak:.1} MiB ({stored} records, with the seeding phones' traffic); automerge-repo {:.1} MiB.",
            m["peak"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// The checked-in byte counts of the quick run, per workload: HTTP bodies up and down.
fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/bytes-quick.json")
}

/// How much a workload's bytes may grow over the baseline before the quick run fails.
const BYTES_TOLERANCE: f64 = 0.02;
/// A growth of a few bytes is noise, not a regression, however small the workload: (b) is about 60
/// bytes, and a cursor that needs one more CBOR byte moves it by 1.7 %.
const BYTES_SLACK: u64 = 8;

/// Byte counts are (nearly) deterministic, unlike times: the quick run (CI runs it) fails when a
/// workload's body bytes grow more than 2 % and more than 8 bytes over
/// `tests/bench/bytes-quick.json`, printing both.
/// `GRIDLINK_BYTES_BASELINE=write` rewrites the file, for a deliberate change committed with its
/// reason.
fn guard_bytes(figures: &[Figures]) {
    let now: serde_json::Map<String, serde_json::Value> =
        figures.iter().map(|f| (f.workload.to_owned(), serde_json::json!({ "body_up": f.body.0, "body_down": f.body.1 }))).collect();
    let path = baseline_path();
    if std::env::var("GRIDLINK_BYTES_BASELINE").as_deref() == Ok("write") {
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        println!("\nByte baseline written to {}.", path.display());
        return;
    }
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (GRIDLINK_BYTES_BASELINE=write makes it)", path.display()));
    let baseline: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    println!("\n| workload | bytes | baseline | now | change |\n|---|---|---|---|---|");
    let mut grown = Vec::new();
    for (workload, figures) in &now {
        for key in ["body_up", "body_down"] {
            let was = baseline.get(workload).and_then(|b| b[key].as_u64());
            let is = figures[key].as_u64().unwrap();
            let Some(was) = was else {
                grown.push(format!("({workload}) {key}: not in the baseline"));
                continue;
            };
            let change = is as f64 / was.max(1) as f64 - 1.0;
            println!("| ({workload}) | {key} | {was} | {is} | {:+.2} % |", change * 100.0);
            if change > BYTES_TOLERANCE && is > was + BYTES_SLACK {
                grown.push(format!("({workload}) {key}: {was} → {is} ({:+.2} %)", change * 100.0));
            }
        }
    }
    assert!(
        grown.is_empty(),
        "bytes grew more than {:.0} % (and {BYTES_SLACK} bytes) over {}: {}; if deliberate, rerun with GRIDLINK_BYTES_BASELINE=write and commit the file with the reason",
        BYTES_TOLERANCE * 100.0,
        path.display(),
        grown.join("; ")
    );
}

/// The prefix of the bench's own directory in the system's temporary directory.
const WORK_PREFIX: &str = "gridlink-bench-";

/// The bench's working directory (its databases and phones' stores, gigabytes on a full run),
/// marked with the bench's process id. A run that was killed cannot remove its own; the next
/// run removes every one whose process is gone.
fn work_dir() -> tempfile::TempDir {
    let tmp = std::env::temp_dir();
    // Whether a process is gone is read in /proc; without it (not Linux) nothing is removed.
    let procs = Path::new("/proc/self").exists();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten().filter(|_| procs) {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(WORK_PREFIX);
        let pid = std::fs::read_to_string(path.join("pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if ours && pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) && std::fs::remove_dir_all(&path).is_ok() {
            eprintln!("removed {} (left by a bench run that was killed)", path.display());
        }
    }
    let dir = tempfile::Builder::new().prefix(WORK_PREFIX).tempdir().unwrap();
    std::fs::write(dir.path().join("pid"), std::process::id().to_string()).unwrap();
    dir
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = |full: usize, small: usize| if quick { small } else { full };
    let given = Server::given();
    let loading = std::env::args().any(|a| a == "load") && !std::env::args().any(|a| a == "county");
    if given.is_some() && !loading {
        // The other runs start their own server: silently ignoring the servers named would
        // measure a different one than the caller meant.
        eprintln!("GRIDLINK_BENCH_SERVERS names servers for `sync_bench load N` only; unset it for this run");
        std::process::exit(2);
    }
    let dir = work_dir();
    // GRIDLINK_BENCH_WORK keeps the exported documents (to run tests/automerge-repo/bench.mjs alone).
    let work = std::env::var_os("GRIDLINK_BENCH_WORK").map_or_else(|| dir.path().join("automerge-repo-workloads"), PathBuf::from);
    // GRIDLINK_BENCH_NODES=2 (on PostgreSQL): that many server processes on the database, the
    // load's devices spread over them.
    let nodes = std::env::var("GRIDLINK_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1usize).max(1);
    if std::env::args().any(|a| a == "county") {
        let (towns, grids) = if quick { (4, 5) } else { (20, 50) };
        let db = make_county(dir.path(), towns, grids);
        let servers: Vec<Server> = (0..nodes).map(|_| Server::start(&db, &dir.path().join("data"))).collect();
        return county_load(dir.path(), &servers, towns, grids, quick);
    }
    if let Some(servers) = given {
        return load(dir.path(), &servers, quick);
    }
    if let Some(at) = std::env::args().skip_while(|a| a != "town").nth(1) {
        // Only the town, for a server run elsewhere: `sync_bench town <dir>`.
        std::fs::create_dir_all(&at).unwrap();
        let db = make_town(Path::new(&at), 100);
        println!("The bench town (100 grid members, password {PASSWORD}): {}", db.display());
        println!("Serve it with `gridlink-server serve --db {} --listen 0.0.0.0:8080`, then from the load's machine:", db.display());
        println!("GRIDLINK_BENCH_SERVERS=http://<host>:8080 sync_bench load 1000");
        return;
    }
    let db = make_town(dir.path(), 100);
    if std::env::args().any(|a| a == "logins") {
        let server = Server::start(&db, &dir.path().join("data"));
        return logins(&server);
    }
    if std::env::args().any(|a| a == "fleet") {
        let server = Server::start(&db, &dir.path().join("data"));
        let n = std::env::args().filter_map(|a| a.parse().ok()).next().unwrap_or(if quick { 100 } else { 10_000 });
        return fleet(dir.path(), &server, n, quick);
    }
    if std::env::args().any(|a| a == "load") {
        let servers: Vec<Server> = (0..nodes).map(|_| Server::start(&db, &dir.path().join("data"))).collect();
        return load(dir.path(), &servers, quick);
    }
    let server = Server::start(&db, &dir.path().join("data"));
    let wire = Arc::new(Wire::default());
    let counted = proxy(&server.base, None, wire.clone());
    let mut figures: Vec<Figures> = Vec::new();

    // Grid members' phones fill the town: 2,000 records first.
    let mut seeders: Vec<(Client, SyncEngine)> =
        (1..=10).map(|g| phone(dir.path(), &format!("seed{g}"), &server.base, &format!("g{g}"))).collect();
    let mut seed = |from: usize, to: usize| {
        for n in from..to {
            let (c, _) = &mut seeders[n % 10];
            c.create_incident(report(n)).unwrap();
        }
        for (c, e) in seeders.iter_mut() {
            e.sync_once(c).unwrap();
        }
    };
    let (first, all) = (scale(2000, 200), scale(5000, 500));
    seed(0, first);

    // (a) A fresh station device bootstraps: the village's records (all of them here).
    let (mut station, engine) = phone(dir.path(), "station-a", &counted, "station");
    let cpu0 = server.cpu_s();
    wire.take();
    let mine = thread_cpu_s();
    let t = Instant::now();
    let r = engine.sync_once(&mut station).unwrap();
    let wall = t.elapsed().as_secs_f64();
    let phone_cpu = Some(thread_cpu_s() - mine);
    let cpu = server.cpu_s() - cpu0;
    let ids_a = station.record_ids().unwrap();
    let floor = deflated(&uncompressed(ids_a.iter().flat_map(|id| station.changes(id).unwrap())));
    // The other way to send them: whole saved documents, without per-column deflate as the server sends them.
    let saved = deflated(&ids_a.iter().flat_map(|id| document(&station, id).save_nocompress()).collect::<Vec<u8>>());
    figures.push(Figures {
        workload: "a",
        label: format!("(a) fresh device, {} records", ids_a.len()),
        wall,
        rounds: r.rounds,
        body: (r.bytes_up, r.bytes_down),
        wire: wire.take(),
        cpu,
        phone_cpu,
        floor: format!("{floor} B, 1 round trip (whole documents instead: {saved} B)"),
    });
    export(&station, &ids_a, &work.join("seed"), 0);

    // (b) The town grows to 5,000 records; the device catches up, then syncs with nothing new.
    seed(first, all);
    engine.sync_once(&mut station).unwrap();
    let rest: Vec<String> = station.record_ids().unwrap().into_iter().filter(|id| !ids_a.contains(id)).collect();
    export(&station, &rest, &work.join("seed"), ids_a.len());
    let docs = station.record_count().unwrap();
    let cpu0 = server.cpu_s();
    wire.take();
    let t = Instant::now();
    let r = engine.sync_once(&mut station).unwrap();
    let (wall, bytes, cpu) = (t.elapsed().as_secs_f64(), wire.take(), server.cpu_s() - cpu0);
    // The phone's CPU for such a round, averaged over 50 (the clock ticks in 10 ms).
    let mine = thread_cpu_s();
    for _ in 0..50 {
        engine.sync_once(&mut station).unwrap();
    }
    figures.push(Figures {
        workload: "b",
        label: format!("(b) {docs} records, nothing new"),
        wall,
        rounds: r.rounds,
        body: (r.bytes_up, r.bytes_down),
        wire: bytes,
        cpu,
        phone_cpu: Some((thread_cpu_s() - mine) / 50.0),
        floor: "0 B, 1 round trip".into(),
    });

    // (c) A day's work of one grid member: 50 new records and 200 actions, offline, then one sync.
    let (mut grid, ge) = phone(dir.path(), "grid-day", &counted, "g1");
    ge.sync_once(&mut grid).unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(grid.create_incident(report(100_000 + n)).unwrap());
    }
    for k in 0..200 {
        let id = &ids[k % 50];
        let edit =
            gridlink_core::IncidentEdit { notes: Some(format!("第{k}次补充:现场复查情况记录。")), ..Default::default() };
        grid.edit_incident(id, edit).unwrap();
    }
    export(&grid, &ids, &work.join("day"), 0);
    let pending = uncompressed(grid.outbox(100_000).unwrap().into_iter().map(|o| o.bytes));
    let cpu0 = server.cpu_s();
    wire.take();
    let mine = thread_cpu_s();
    let t = Instant::now();
    let r = ge.sync_once(&mut grid).unwrap();
    let phone_cpu = Some(thread_cpu_s() - mine);
    figures.push(Figures {
        workload: "c",
        label: "(c) a day's work: 50 records + 200 changes".into(),
        wall: t.elapsed().as_secs_f64(),
        rounds: r.rounds,
        body: (r.bytes_up, r.bytes_down),
        wire: wire.take(),
        cpu: server.cpu_s() - cpu0,
        phone_cpu,
        floor: format!("{} B, 1 round trip", deflated(&pending)),
    });

    // (d) 100 devices after a morning offline (3 new records and 6 changes each), all at once.
    let devices = scale(100, 20);
    let mut fleet: Vec<(Client, SyncEngine)> =
        (0..devices).map(|i| phone(dir.path(), &format!("morning{i}"), &counted, &format!("g{}", i % 100 + 1))).collect();
    for (c, e) in fleet.iter_mut() {
        e.sync_once(c).unwrap();
    }
    for (i, (c, _)) in fleet.iter_mut().enumerate() {
        let mut ids = Vec::new();
        for n in 0..3 {
            let id = c.create_incident(report(200_000 + i * 10 + n)).unwrap();
            for k in 0..2 {
                c.edit_incident(&id, gridlink_core::IncidentEdit { notes: Some(format!("补充{k}")), ..Default::default() }).unwrap();
            }
            ids.push(id);
        }
        export(c, &ids, &work.join(format!("morning/{i:03}")), 0);
    }
    let cpu0 = server.cpu_s();
    wire.take();
    let barrier = Arc::new(Barrier::new(devices));
    let t = Instant::now();
    let handles: Vec<_> = fleet
        .into_iter()
        .map(|(mut c, e)| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let t = Instant::now();
                let r = e.sync_once(&mut c).unwrap();
                (t.elapsed().as_secs_f64(), r)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().map(|r| r.0).collect();
    lat.sort_by(f64::total_cmp);
    let (up, down, rounds): (usize, usize, usize) =
        results.iter().fold((0, 0, 0), |a, (_, r)| (a.0 + r.bytes_up, a.1 + r.bytes_down, a.2 + r.rounds));
    figures.push(Figures {
        workload: "d",
        label: format!(
            "(d) {devices} devices at once after a morning offline (p50 {:.2} s, p99 {:.2} s per device)",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        ),
        wall,
        rounds,
        body: (up, down),
        wire: wire.take(),
        cpu: server.cpu_s() - cpu0,
        phone_cpu: None,
        floor: String::new(),
    });

    println!("## Gridlink sync figures (server: release binary on 127.0.0.1; phones: core Client + SyncEngine)\n");
    println!(
        "| workload | wall | rounds | body up | body down | wire up | wire down | server CPU | phone CPU | floor (deflated changes) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &figures {
        let phone = f.phone_cpu.map_or("—".to_owned(), |s| format!("{:.1} ms", s * 1e3));
        println!(
            "| {} | {:.3} s | {} | {} | {} | {} | {} | {:.2} s | {phone} | {} |",
            f.label, f.wall, f.rounds, f.body.0, f.body.1, f.wire.0, f.wire.1, f.cpu, f.floor
        );
    }

    if quick {
        guard_bytes(&figures);
    }

    // Memory and disk per stored record.
    let (rss, anon, peak) = server.memory_mib();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(conn);
    let db_bytes: u64 = ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok()).map(|m| m.len()).sum();
    let stored: i64 = rusqlite::Connection::open(&db).unwrap().query_row("SELECT count(*) FROM docs", [], |r| r.get(0)).unwrap();
    println!(
        "\nServer after the workloads: {stored} records, RSS {rss:.1} MiB ({anon:.1} MiB of it anonymous; peak {peak:.1} MiB), database {:.1} MiB → {:.1} MiB of disk per 10,000 records.",
        db_bytes as f64 / 1048576.0,
        db_bytes as f64 / 1048576.0 / stored as f64 * 10_000.0
    );

    // The same documents through automerge-repo, and the two side by side.
    std::fs::write(work.join("manifest.json"), format!("{{\"a\": {}}}", ids_a.len())).unwrap();
    match automerge_repo(&work) {
        Err(why) if why.starts_with("not run") => println!("\nautomerge-repo side {why}"),
        Err(why) => panic!("automerge-repo side {why}"),
        Ok(reference) => side_by_side(&figures, &reference, (peak, stored)),
    }

    // Rural link: 300 ms round trip, 200 kbit/s, a stall every 50 segments (≈2% loss).
    let link = Link { one_way: Duration::from_millis(150), bytes_per_s: 25_000.0, stall_every: 50 };
    let slow = proxy(&server.base, Some(link), Arc::new(Wire::default()));
    SyncEngine::http(&server.base).sync_once(&mut station).unwrap(); // catch up on the fast link first
    let engine = SyncEngine::http(&slow);
    let t = Instant::now();
    let r = engine.sync_once(&mut station).unwrap();
    println!("\n| rural link (300 ms RTT, 200 kbit/s, ≈2% loss) | wall | bytes up | bytes down |\n|---|---|---|---|");
    println!("| (b) nothing new, {docs} records | {:.2} s | {} | {} |", t.elapsed().as_secs_f64(), r.bytes_up, r.bytes_down);
    let mut grid = grid;
    let slow_engine = SyncEngine::http(&slow);
    for n in 0..50 {
        let id = grid.create_incident(report(300_000 + n)).unwrap();
        for k in 0..4 {
            grid.edit_incident(&id, gridlink_core::IncidentEdit { notes: Some(format!("补充{k}")), ..Default::default() }).unwrap();
        }
    }
    let t = Instant::now();
    let r = slow_engine.sync_once(&mut grid).unwrap();
    println!("| (c) a day's work, 50 records + 200 changes | {:.2} s | {} | {} |", t.elapsed().as_secs_f64(), r.bytes_up, r.bytes_down);

    load(dir.path(), std::slice::from_ref(&server), quick);
}

/// A phone reduced to its sync protocol, for the load runs. A real phone logged in and made its
/// reports offline (real Automerge changes by its own actor); the timed loop only sends them, one
/// report per round, and decodes the answers. So the load measures the server, not 1,000 phones'
/// local databases sharing this machine's two cores.
struct WireDevice {
    transport: HttpTransport,
    token: String,
    cursor: Option<u64>,
    reports: std::collections::VecDeque<DocChanges>,
}

impl WireDevice {
    fn new(dir: &Path, base: &str, name: &str, user: &str, reports: usize) -> Self {
        let (mut c, e) = phone(dir, name, base, user);
        e.sync_once(&mut c).unwrap();
        let mut queue = std::collections::VecDeque::new();
        for n in 0..reports {
            let id = c.create_incident(report(1_000_000 + n)).unwrap();
            let changes = c.outbox(1_000).unwrap().into_iter().filter(|o| o.doc_id == id).map(|o| ByteBuf::from(o.bytes)).collect();
            queue.push_back(DocChanges { doc: DocId::parse(&id).unwrap(), changes });
        }
        let token = c.sync_meta("token").unwrap().unwrap();
        let cursor = c.sync_meta("cursor").unwrap().and_then(|v| v.parse().ok());
        let _ = std::fs::remove_file(c.path());
        WireDevice { transport: HttpTransport::new(base), token, cursor, reports: queue }
    }

    /// One sync round pushing the next report (pages followed, as the engine does). Returns the
    /// round's time in seconds, or None once the device has no report left.
    fn round(&mut self) -> Option<f64> {
        let report = self.reports.pop_front()?;
        let t = Instant::now();
        let mut push = vec![report];
        loop {
            let body = protocol::encode(&SyncRequest {
                v: PROTOCOL_VERSION,
                cursor: self.cursor,
                push: std::mem::take(&mut push),
                page_bytes: None,
                whole_docs: true,
                personal: vec![],
                ..Default::default()
            });
            let resp = self
                .transport
                .call(HttpRequest {
                    method: "POST",
                    path: "/api/v1/sync".into(),
                    token: Some(self.token.clone()),
                    content_type: Some(protocol::CONTENT_TYPE),
                    body,
                })
                .unwrap();
            assert_eq!(resp.status, 200, "sync refused: {}", String::from_utf8_lossy(&resp.body));
            let answer: SyncResponse = protocol::decode(&resp.body).unwrap();
            assert!(answer.rejected.is_empty(), "a report was refused: {:?}", answer.rejected);
            self.cursor = Some(answer.cursor);
            if !answer.more {
                return Some(t.elapsed().as_secs_f64());
            }
        }
    }
}

/// Runs `fleet` for at most `seconds` and `rounds` rounds per device; each device waits `pause`
/// (±20 %) between its rounds, after a random start within the first pause. Returns sorted round
/// times and the wall time.
fn drive(fleet: &mut [WireDevice], seconds: f64, rounds: usize, pause: Duration) -> (Vec<f64>, f64) {
    let t = Instant::now();
    let groups = drive_each(fleet, seconds, rounds, pause, fleet.len().max(1));
    (groups.into_iter().flatten().collect(), t.elapsed().as_secs_f64())
}

/// As [`drive`], returning the sorted round times of each group of `group` consecutive devices
/// (a town's devices, in the county load).
fn drive_each(fleet: &mut [WireDevice], seconds: f64, rounds: usize, pause: Duration, group: usize) -> Vec<Vec<f64>> {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let lat = Mutex::new(vec![Vec::new(); fleet.len().div_ceil(group)]);
    std::thread::scope(|scope| {
        for (i, d) in fleet.iter_mut().enumerate() {
            let lat = &lat;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    let jitter = |p: Duration| p.mul_f64(rand::random_range(0.8..1.2));
                    std::thread::sleep(pause.mul_f64(rand::random_range(0.0..1.0)));
                    for _ in 0..rounds {
                        if Instant::now() >= stop {
                            break;
                        }
                        let took = d.round().expect("a report left for this round");
                        lat.lock().unwrap()[i / group].push(took);
                        std::thread::sleep(jitter(pause));
                    }
                })
                .unwrap();
        }
    });
    let mut groups = lat.into_inner().unwrap();
    for g in &mut groups {
        g.sort_by(f64::total_cmp);
    }
    groups
}

/// Server load: devices syncing in a loop, bounded in time and in rounds, one new report per
/// round. First as fast as they can (the server's capacity), then 1,000 devices each syncing
/// once every 10, 5 and 3 s.
fn load(dir: &Path, servers: &[Server], quick: bool) {
    // None when the servers run elsewhere (`GRIDLINK_BENCH_SERVERS`): their CPU is read there.
    let cpu_s = || servers.iter().map(Server::cpu_here_s).sum::<Option<f64>>();
    let cpu_since = |before: Option<f64>| cpu_s().zip(before).map(|(now, before)| now - before);
    // `sync_bench load 200 500` runs just those fleet sizes back to back.
    let sizes: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let sizes = if !sizes.is_empty() {
        sizes
    } else if quick {
        vec![50]
    } else {
        vec![100, 300, 1000]
    };
    let paced = if quick { 50 } else { 1000 };
    let most = sizes.iter().copied().chain([paced]).max().unwrap();
    let (rounds_each, seconds) = if quick { (4, 5.0) } else { (8, 20.0) };
    let rounds_each = std::env::var("GRIDLINK_LOAD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(rounds_each);
    // Paced fleets: every device syncs once per pause, the way phones in the field do. Shorter
    // pauses bring the fleet nearer the server's capacity.
    let pauses: Vec<Duration> = if quick { vec![Duration::from_secs(1)] } else { [10, 5, 3].map(Duration::from_secs).to_vec() };
    let paced_rounds = 4;
    let t = Instant::now();
    // Grids 11–100 hold none of the seeded records: devices start light. Each device gets a
    // report for every round of every run it takes part in.
    let mut pool: Vec<WireDevice> = (0..most)
        .map(|i| {
            let runs = sizes.iter().filter(|&&n| n > i).count();
            let reports = runs * rounds_each + if i < paced { paced_rounds * pauses.len() } else { 0 };
            WireDevice::new(dir, &servers[i % servers.len()].base, &format!("wire{i}"), &format!("g{}", 11 + i % 90), reports)
        })
        .collect();
    let made: usize = pool.iter().map(|d| d.reports.len()).sum();
    println!("\n{most} load devices logged in and made {made} reports offline in {:.0} s.", t.elapsed().as_secs_f64());
    println!(
        "\n| devices, rounds back to back (one new report each, ≤ {rounds_each} rounds per device) | rounds | changes ingested/s | p50 round | p99 round | server CPU |\n|---|---|---|---|---|---|"
    );
    let row = |label: String, lat: &[f64], wall: f64, cpu: Option<f64>| {
        let cpu = cpu.map_or_else(|| format!("elsewhere, in {wall:.1} s"), |cpu| format!("{cpu:.1} s of {wall:.1} s"));
        println!(
            "| {label} | {} | {:.0} | {:.0} ms | {:.0} ms | {cpu} |",
            lat.len(),
            lat.len() as f64 / wall,
            pct(lat, 0.5) * 1e3,
            pct(lat, 0.99) * 1e3,
        );
    };
    for n in sizes {
        let cpu0 = cpu_s();
        let (lat, wall) = drive(&mut pool[..n], seconds, rounds_each, Duration::ZERO);
        row(n.to_string(), &lat, wall, cpu_since(cpu0));
    }
    println!(
        "\n| {paced} devices, each one round per pause (one new report per round, {paced_rounds} rounds) | rounds | changes ingested/s | p50 round | p99 round | server CPU |\n|---|---|---|---|---|---|"
    );
    for pause in pauses {
        let cpu0 = cpu_s();
        let (lat, wall) = drive(&mut pool[..paced], pause.as_secs_f64() * (paced_rounds + 1) as f64, paced_rounds, pause);
        row(format!("every {} s", pause.as_secs()), &lat, wall, cpu_since(cpu0));
    }
    for server in servers.iter().filter(|s| s.child.is_some()) {
        let (rss, anon, peak) = server.memory_mib();
        println!(
            "\nServer memory after the load, its {most} connections still open: RSS {rss:.1} MiB ({anon:.1} MiB of it anonymous; peak {peak:.1} MiB)."
        );
    }
    // The phones hang up (their connections close), as a fleet does between its syncs.
    drop(pool);
    std::thread::sleep(Duration::from_secs(2));
    for server in servers.iter().filter(|s| s.child.is_some()) {
        let (rss, anon, _) = server.memory_mib();
        println!("Server memory once the devices hung up: RSS {rss:.1} MiB ({anon:.1} MiB of it anonymous).");
    }
}

/// The county's paced load (issue 18): every grid member of every town has a phone that syncs
/// once every 10 s (± 20 %) with one new report per round, the devices spread over the nodes.
/// Prints p50/p99 over the county and the slowest town's p99.
fn county_load(dir: &Path, servers: &[Server], towns: usize, grids: usize, quick: bool) {
    let (pause, rounds) = if quick { (Duration::from_secs(1), 3) } else { (Duration::from_secs(10), 6) };
    let t = Instant::now();
    let mut fleet: Vec<WireDevice> = (0..towns * grids)
        .map(|i| {
            let (town, grid) = (i / grids + 1, i % grids + 1);
            WireDevice::new(dir, &servers[i % servers.len()].base, &format!("county{i}"), &format!("t{town}g{grid}"), rounds)
        })
        .collect();
    println!(
        "\n{} devices ({towns} towns × {grids} grid members, {} node(s)) logged in and made {} reports offline in {:.0} s.",
        fleet.len(),
        servers.len(),
        towns * grids * rounds,
        t.elapsed().as_secs_f64()
    );
    let cpu0 = servers.iter().map(Server::cpu_s).sum::<f64>();
    // Time enough for every round even with the longest pauses; the rounds themselves are short.
    let per_town = drive_each(&mut fleet, pause.as_secs_f64() * (1.25 * rounds as f64 + 1.5), rounds, pause, grids);
    let cpu = servers.iter().map(Server::cpu_s).sum::<f64>() - cpu0;
    let mut all: Vec<f64> = per_town.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    let worst = per_town.iter().map(|lat| pct(lat, 0.99)).fold(0.0, f64::max);
    println!(
        "\n| county, {towns} towns × {grids} devices, each one round every {} s (one new report per round, {rounds} rounds) | rounds | p50 round | p99 round | slowest round | worst town's p99 | server CPU |\n|---|---|---|---|---|---|---|",
        pause.as_secs()
    );
    println!(
        "| {} node(s) | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {cpu:.1} s |",
        servers.len(),
        all.len(),
        pct(&all, 0.5) * 1e3,
        pct(&all, 0.99) * 1e3,
        all.last().copied().unwrap_or(f64::NAN) * 1e3,
        worst * 1e3,
    );
}

/// A town's whole fleet at the pace of the field (issue 20): `n` devices (10,000), each syncing
/// once a minute (± 20 %) with one new report per round, 3 rounds. Prints p50/p99 and the
/// server's resident memory sampled every 10 s; any refused or failed round stops the bench.
fn fleet(dir: &Path, server: &Server, n: usize, quick: bool) {
    let (pause, rounds) = if quick { (Duration::from_secs(2), 2) } else { (Duration::from_secs(60), 3) };
    let t = Instant::now();
    // Four at a time: each logs in (argon2) and makes its reports in a real phone store first.
    let made = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for w in 0..4 {
            let made = &made;
            s.spawn(move || {
                for i in (w..n).step_by(4) {
                    let d = WireDevice::new(dir, &server.base, &format!("fleet{i}"), &format!("g{}", 1 + i % 100), rounds);
                    made.lock().unwrap().push(d);
                }
            });
        }
    });
    let mut devices = made.into_inner().unwrap();
    println!("\n{n} devices logged in and made {} reports offline in {:.0} s.", n * rounds, t.elapsed().as_secs_f64());
    let done = std::sync::atomic::AtomicBool::new(false);
    let samples = Mutex::new(Vec::new());
    let cpu0 = server.cpu_s();
    let (lat, wall) = std::thread::scope(|s| {
        s.spawn(|| {
            let t = Instant::now();
            while !done.load(Ordering::Relaxed) {
                let (rss, anon, _) = server.memory_mib();
                samples.lock().unwrap().push((t.elapsed().as_secs(), rss, anon));
                std::thread::sleep(Duration::from_secs(10));
            }
        });
        let out = drive(&mut devices, pause.as_secs_f64() * (1.25 * rounds as f64 + 1.5), rounds, pause);
        done.store(true, Ordering::Relaxed);
        out
    });
    println!(
        "\n| {n} devices, each one round every {} s ± 20 % ({rounds} rounds, one new report each) | rounds | p50 round | p99 round | slowest | server CPU |\n|---|---|---|---|---|---|",
        pause.as_secs()
    );
    println!(
        "| all | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} s of {wall:.0} s |",
        lat.len(),
        pct(&lat, 0.5) * 1e3,
        pct(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(f64::NAN) * 1e3,
        server.cpu_s() - cpu0
    );
    let samples = samples.into_inner().unwrap();
    let line: Vec<String> = samples.iter().map(|(at, rss, anon)| format!("{at} s: {rss:.0} ({anon:.0})")).collect();
    println!("\nServer RSS over the run, MiB (anonymous: heap and stacks; the rest is the database SQLite maps): {}.", line.join(", "));
    let (_, _, peak) = server.memory_mib();
    println!("Server peak RSS: {peak:.1} MiB.");
}

/// The server's memory across logins (issue 20): 400 logins one after another, then 400 more
/// eight at a time, over HTTP as phones make them; resident memory after each.
fn logins(server: &Server) {
    let login = |i: usize| {
        let body = serde_json::json!({"username": format!("g{}", i % 100 + 1), "password": PASSWORD, "device_name": "压测"});
        let resp =
            ureq::post(&format!("{}/api/v1/login", server.base)).header("content-type", "application/json").send(body.to_string()).unwrap();
        assert_eq!(resp.status(), 200);
    };
    println!("\n| logins | wall | server RSS after | peak |\n|---|---|---|---|");
    for at_once in [1, 8] {
        let t = Instant::now();
        std::thread::scope(|s| {
            for w in 0..at_once {
                s.spawn(move || (w..400).step_by(at_once).for_each(login));
            }
        });
        let (rss, _, peak) = server.memory_mib();
        println!("| 400, {at_once} at a time | {:.1} s | {rss:.0} MiB | {peak:.0} MiB |", t.elapsed().as_secs_f64());
    }
}
