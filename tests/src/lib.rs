//! Harness for end-to-end tests: a real town server on `127.0.0.1:0` with a small town, and
//! phones that each have their own SQLite store and sync over real HTTP.

use std::sync::Arc;
use std::thread::JoinHandle;

use gridlink_core::sync::{SyncEngine, SyncError, SyncReport};
use gridlink_core::{Client, ClientOptions, Clock, OrgUnit, SystemClock, UnitCode, UnitKind};
use gridlink_server::db::Location;
use gridlink_server::import::{PersonRow, insert_people, insert_units, parse_role_text};
use gridlink_server::{AppState, Settings, build_state_at, launch};

pub const PASSWORD: &str = "test-password-1";
pub use gridlink_server::demo::DEMO_PASSWORD;

pub mod process;
pub const TOWN: &str = "532331101";
pub const VILLAGE: &str = "532331101201";
pub const VILLAGE2: &str = "532331101202";
pub const GRID_A: &str = "532331101201-01-01";
pub const GRID_B: &str = "532331101201-01-02";
pub const GRID_C: &str = "532331101202-01-01";
pub const DEPT_A: &str = "532331101-D01";
pub const DEPT_B: &str = "532331101-D02";
pub const SERVICE_CENTER: &str = "532331101-D03";

/// Accounts of the test town: (user, role, unit).
pub const PEOPLE: &[(&str, &str, &str)] = &[
    ("grid_a", "grid_member", GRID_A),
    ("grid_b", "grid_member", GRID_B),
    ("grid_c", "grid_member", GRID_C),
    ("village", "station_staff", VILLAGE),
    ("village2", "station_staff", VILLAGE2),
    ("center", "center_operator", TOWN),
    ("dept_a", "department_handler", DEPT_A),
    ("dept_b", "department_handler", DEPT_B),
    ("dept_svc", "department_handler", SERVICE_CENTER),
    ("admin", "admin", TOWN),
];

/// A person of the test town by user name ([`PEOPLE`]).
pub fn person(user: &str) -> gridlink_core::Person {
    let (id, role, u) = PEOPLE.iter().find(|(id, _, _)| *id == user).unwrap_or_else(|| panic!("no test person {user}"));
    gridlink_core::Person { id: (*id).into(), name: format!("测试{id}"), role: parse_role_text(role).unwrap(), unit: unit(u) }
}

pub fn unit(code: &str) -> UnitCode {
    UnitCode::parse(code).unwrap()
}

/// The test town's units.
pub fn org() -> Vec<OrgUnit> {
    let u = |code: &str, name: &str, kind, parent: Option<&str>, key: Option<&str>| OrgUnit {
        code: unit(code),
        name: name.into(),
        kind,
        parent: parent.map(unit),
        department_key: key.map(Into::into),
    };
    vec![
        u(TOWN, "广通镇", UnitKind::Town, None, None),
        u(VILLAGE, "广通社区", UnitKind::Village, Some(TOWN), None),
        u(VILLAGE2, "妥安村", UnitKind::Village, Some(TOWN), None),
        u("532331101201-01", "一组", UnitKind::Group, Some(VILLAGE), None),
        u("532331101202-01", "一组", UnitKind::Group, Some(VILLAGE2), None),
        u(GRID_A, "一组1号网格", UnitKind::Grid, Some("532331101201-01"), None),
        u(GRID_B, "一组2号网格", UnitKind::Grid, Some("532331101201-01"), None),
        u(GRID_C, "妥安一组1号网格", UnitKind::Grid, Some("532331101202-01"), None),
        u(DEPT_A, "综合行政执法中队", UnitKind::Department, Some(TOWN), Some("zhifa")),
        u(DEPT_B, "环境卫生管理所", UnitKind::Department, Some(TOWN), Some("huanwei")),
        u(SERVICE_CENTER, "便民服务中心", UnitKind::Department, Some(TOWN), Some("bianmin")),
    ]
}

/// Creates the test town in a server database.
pub fn seed(state: &AppState) {
    let conn = state.db.writer();
    insert_units(&*conn, &org()).unwrap();
    seed_people(&*conn);
}

/// The test town's accounts ([`PEOPLE`]), for a database whose units are in already.
pub fn seed_people(conn: &dyn gridlink_server::storage::Storage) {
    let people: Vec<PersonRow> = PEOPLE
        .iter()
        .map(|(id, role, u)| PersonRow {
            id: (*id).into(),
            name: format!("测试{id}"),
            role: parse_role_text(role).unwrap(),
            unit: unit(u),
            password: PASSWORD.into(),
        })
        .collect();
    insert_people(conn, &people, 0).unwrap();
}

/// Where a test server keeps its data: a SQLite file in `dir`, or, when
/// `GRIDLINK_TEST_SERVER_PG` holds the URL of a PostgreSQL server's maintenance database, a new
/// database of its own there (the whole server then runs on PostgreSQL).
pub fn server_location(dir: &tempfile::TempDir) -> Location {
    match std::env::var("GRIDLINK_TEST_SERVER_PG") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("gl_test_{:012x}", rand::random::<u64>() >> 16);
            Location::Postgres(gridlink_server::storage::PgStorage::create_database(&admin, &name).unwrap())
        }
        _ => Location::Sqlite(dir.path().join("server.db")),
    }
}

/// The PostgreSQL server the tests may use (`GRIDLINK_TEST_PG_URL`, else
/// `GRIDLINK_TEST_SERVER_PG`), as `cargo xtask test` sets it; None (the test then skips, saying
/// so) when neither is set, which `GRIDLINK_REQUIRE_PG=1` turns into a failure.
pub fn postgres_for_tests() -> Option<String> {
    let url = ["GRIDLINK_TEST_PG_URL", "GRIDLINK_TEST_SERVER_PG"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
    if url.is_none() {
        assert!(std::env::var_os("GRIDLINK_REQUIRE_PG").is_none(), "GRIDLINK_REQUIRE_PG is set but no PostgreSQL URL is");
        eprintln!("skipped: set GRIDLINK_TEST_PG_URL=postgres://… to run it (cargo xtask test does)");
    }
    url
}

/// A station's work in the fault tests: accepts every record the routing brought it and
/// dispatches each to `grid` with a deadline 200 ms away, so the deadline sweeper soon has work.
pub fn dispatch_with_short_deadlines(c: &mut Client, grid: &str) {
    for t in c.my_tasks(20).unwrap().into_iter().filter(|t| t.status == Some(gridlink_core::Status::Reported)) {
        c.act(&t.id, gridlink_core::Action::Accept, "").unwrap();
        let soon = c.now_ms() + 200;
        c.act(&t.id, gridlink_core::Action::Dispatch { to_unit: unit(grid), deadline_ms: Some(soon) }, "").unwrap();
    }
}

/// Whether test servers run on PostgreSQL ([`server_location`]).
pub fn servers_on_postgres() -> bool {
    std::env::var("GRIDLINK_TEST_SERVER_PG").is_ok_and(|v| !v.is_empty())
}

/// A running server.
#[derive(Debug)]
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the test town.
    pub fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock))
    }

    /// Starts a server with the given clock.
    pub fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::start_seeded(clock, seed)
    }

    /// Starts a server with the demo town 广通镇 (its accounts use [`DEMO_PASSWORD`]).
    pub fn start_demo() -> Self {
        Self::start_seeded(Arc::new(SystemClock), |state| {
            gridlink_server::demo::seed(state).unwrap();
        })
    }

    /// Starts a server whose empty database `seed` fills first.
    pub fn start_seeded(clock: Arc<dyn Clock>, seed: impl FnOnce(&AppState)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = server_location(&dir);
        let data = dir.path().join("data");
        Self::start_node(dir, &db, data, clock, seed)
    }

    /// Starts a server node on the database at `db` with its photos in `data` (several nodes of
    /// one PostgreSQL database share both); `seed` runs first.
    pub fn start_node(
        dir: tempfile::TempDir,
        db: &Location,
        data: std::path::PathBuf,
        clock: Arc<dyn Clock>,
        seed: impl FnOnce(&AppState),
    ) -> Self {
        let settings = Settings {
            case_prefix: "GT".into(),
            token_days: 90,
            max_attachment_bytes: 10 << 20,
            data_dir: data,
            secure_cookies: false,
            sweep_interval_ms: 60_000,
        };
        let state = build_state_at(settings, db, clock).unwrap();
        seed(&state);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                launch(st, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self { base: format!("http://{addr}"), addr, state, dir, shutdown: Some(tx), thread: Some(thread) }
    }

    /// Asks the server to stop; requests in flight finish first. `Drop` waits for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// A phone logged in as `user`.
    pub fn phone(&self, user: &str) -> Phone {
        Phone::login(&self.base, user)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A phone: its own store, its own sync engine.
#[derive(Debug)]
pub struct Phone {
    pub client: Client,
    pub engine: SyncEngine,
    pub dir: tempfile::TempDir,
    /// The server this phone talks to.
    pub base: String,
    /// The device id the server gave at login.
    pub device_id: String,
}

impl Phone {
    /// A fresh phone that logs in.
    pub fn login(base: &str, user: &str) -> Self {
        Self::login_with_clock(base, user, Arc::new(SystemClock))
    }

    /// A fresh phone with the given clock that logs in.
    pub fn login_with_clock(base: &str, user: &str, clock: Arc<dyn Clock>) -> Self {
        Self::login_full(base, user, PASSWORD, clock)
    }

    /// A fresh phone that logs in with a password of its own (the demo town's accounts).
    pub fn login_with_password(base: &str, user: &str, password: &str) -> Self {
        Self::login_full(base, user, password, Arc::new(SystemClock))
    }

    fn login_full(base: &str, user: &str, password: &str, clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = ClientOptions { clock, ..Default::default() };
        let mut client = Client::open_with(dir.path().join("phone.db"), opts).unwrap();
        let engine = SyncEngine::http(base);
        let login = engine.login(&mut client, user, password, "测试手机").unwrap();
        Self { client, engine, dir, base: base.to_owned(), device_id: login.device_id }
    }

    /// One sync (until nothing more is waiting).
    pub fn sync(&mut self) -> Result<SyncReport, SyncError> {
        self.engine.sync_once(&mut self.client)
    }
}

impl std::ops::Deref for Phone {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Phone {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Raw HTTP to the server, for what a phone would never send.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Reads a response body as JSON.
pub fn json(resp: ureq::http::Response<ureq::Body>) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// The token a phone holds.
pub fn token(phone: &Phone) -> String {
    phone.sync_meta("token").unwrap().unwrap()
}

/// An `Authorization` header value for a device token.
pub fn bearer(tok: &str) -> String {
    format!("Bearer {tok}")
}

/// A JSON API endpoint fetched with a device token.
pub fn api_get(server: &TestServer, path: &str, tok: &str) -> (u16, serde_json::Value) {
    json(http().get(format!("{}{path}", server.base)).header("Authorization", bearer(tok)).call().unwrap())
}

/// A console page fetched with the session cookie (a device token works as one).
pub fn console_get(server: &TestServer, path: &str, tok: &str) -> (u16, String) {
    let resp = http().get(format!("{}{path}", server.base)).header("Cookie", format!("gl_session={tok}")).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().read_to_string().unwrap_or_default())
}

/// The CSRF token of a console page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"_csrf\" value=\"").expect("a form with a CSRF token") + 20;
    page[at..at + 32].to_owned()
}

/// A console action form, posted as a browser does (multipart).
pub fn console_act(server: &TestServer, id: &str, tok: &str, fields: &[(&str, &str)]) -> u16 {
    let boundary = "gridlinkboundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    agent
        .post(format!("{}/console/records/{id}/act", server.base))
        .header("Cookie", format!("gl_session={tok}"))
        .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
        .send(body.as_bytes())
        .unwrap()
        .status()
        .as_u16()
}
