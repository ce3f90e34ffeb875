use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gridlink_core::SystemClock;
use gridlink_server::config::{Cli, Command, FileConfig, settings, tls_paths};
use gridlink_server::db::Location;
use gridlink_server::{build_state_at, demo, import, launch, launch_tls};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator. Under 1,000 devices back to back glibc kept about
/// twice the live heap resident (heaptrack: 165 MiB peak heap, 330 MiB resident) in its per-thread
/// arenas; mimalloc gives freed pages back and was also faster on the same load
/// (docs/benchmarks.md, "Server memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("GRIDLINK_LOG").unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    if cli.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        // Colours only on a terminal: journald and log files get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("错误: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            let db = args.db.or(file.db.clone()).ok_or("请用 --db、GRIDLINK_DB 或配置文件指定数据库文件或 PostgreSQL 地址")?;
            let location = Location::parse(&db.to_string_lossy());
            let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid"));
            let tls = tls_paths(&args.common, &file)?;
            // Held while serving: no restore replaces the file under a running server. (A
            // PostgreSQL database is shared by several nodes and restored by its own tools.)
            let _lock = match location.file() {
                Some(path) => Some(gridlink_server::backup::ServeLock::take(path).map_err(|e| e.to_string())?),
                None => None,
            };
            let state = build_state_at(settings(&args.common, &file, &location.home()), &location, Arc::new(SystemClock))
                .map_err(|e| e.for_operator())?;
            serve(vec![state], listen, None, tls)
        }
        Command::Demo(args) => {
            let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            let db = args.db.clone().unwrap_or_else(|| tmp.path().join("gridlink-demo.db"));
            let location = Location::parse(&db.to_string_lossy());
            let start = || {
                build_state_at(settings(&args.common, &file, &location.home()), &location, Arc::new(SystemClock))
                    .map_err(|e| e.for_operator())
            };
            let state = start()?;
            let logins = if args.county { demo::seed_county(&state) } else { demo::seed(&state) }.map_err(|e| e.to_string())?;
            let mut nodes = vec![state];
            // The county on PostgreSQL: a second node on the same database, as a county runs.
            if args.county && location.file().is_none() {
                nodes.push(start()?);
            }
            serve(nodes, args.listen, Some(logins), tls_paths(&args.common, &file)?)
        }
        Command::Apikey(args) => {
            let db = gridlink_server::db::Db::open(&args.db, 1).map_err(|e| e.to_string())?;
            let key = gridlink_server::open311::create_api_key(&*db.writer(), &args.person, &args.name, chrono_now())?;
            println!("已为账号 {} 创建 API 密钥(只显示这一次,请妥善保存):\n{key}", args.person);
            Ok(())
        }
        Command::Backup(args) => {
            let db = args.db.or(file.db).ok_or("请用 --db、GRIDLINK_DB 或配置文件指定数据库文件")?;
            let summary = gridlink_server::backup::backup(&db, &args.out).map_err(|e| e.to_string())?;
            println!("已备份到 {}: {summary}", args.out.display());
            println!("附件(照片)在附件目录中,按文件名(哈希)存放且从不修改,请一并复制(如 rsync -a)。");
            Ok(())
        }
        Command::Restore(args) => {
            let db = args.db.or(file.db).ok_or("请用 --db、GRIDLINK_DB 或配置文件指定数据库文件")?;
            let (summary, aside) = gridlink_server::backup::restore(&args.from, &db, chrono_now()).map_err(|e| e.to_string())?;
            println!("已从 {} 恢复 {}: {summary}", args.from.display(), db.display());
            if let Some(aside) = aside {
                println!("原数据库已保留为 {}", aside.display());
            }
            println!("各手机下次同步时会重新上传备份之后的办理记录,请让所有手机联网同步一次。");
            Ok(())
        }
        Command::CheckConfig(args) => {
            let (problems, facts) = gridlink_server::config::check(&args, &file);
            for f in facts {
                println!("{f}");
            }
            if problems.is_empty() {
                println!("配置无误。");
                Ok(())
            } else {
                Err(format!("配置有 {} 处问题:\n  {}", problems.len(), problems.join("\n  ")))
            }
        }
        Command::Migrate(args) => {
            // No server may write the file while it is copied.
            let _lock = gridlink_server::backup::ServeLock::take(&args.from).map_err(|e| e.to_string())?;
            let done = gridlink_server::storage::migrate_town(&args.from, &args.to).map_err(|e| e.for_operator())?;
            println!("{done}");
            println!("现在可以用 gridlink-server serve --db <PostgreSQL 地址> 启动服务器,各手机照常同步即可。");
            Ok(())
        }
        Command::Import(args) => {
            let report = import::run(&args.db, &args.what)?;
            println!("{report}");
            Ok(())
        }
    }
}

/// Serves each node on its own port (`listen`, then the ports after it) until Ctrl+C or SIGTERM.
fn serve(
    nodes: Vec<gridlink_server::AppState>,
    listen: std::net::SocketAddr,
    demo: Option<demo::DemoLogins>,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for i in 0..nodes.len() {
            let mut at = listen;
            if listen.port() != 0 {
                at.set_port(listen.port() + i as u16);
            }
            let listener = gridlink_server::bind(at).map_err(|e| format!("无法监听 {at}: {e}"))?;
            listeners.push(listener);
        }
        let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let tls = match tls {
            Some((cert, key)) => Some(gridlink_server::tls_config(&cert, &key).await?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(d) = demo {
            println!("{}", d.banner(addr).replace("http://", &format!("{scheme}://")));
        } else {
            println!("网格通服务器已启动: {scheme}://{addr}");
        }
        if listeners.len() > 1 {
            let all: Vec<String> = listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| format!("{scheme}://{a}")).collect();
            println!("{} 个服务器节点共用一个 PostgreSQL 数据库,手机和浏览器可连接任意一个:{}", all.len(), all.join("  "));
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut served = tokio::task::JoinSet::new();
        for (state, listener) in nodes.into_iter().zip(listeners) {
            let tls = tls.clone();
            let stop = stopped();
            served.spawn(async move {
                match tls {
                    Some(tls) => launch_tls(state, listener, tls, stop).await,
                    None => launch(state, tokio::net::TcpListener::from_std(listener)?, stop).await,
                }
            });
        }
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutting down: finishing requests in flight");
        };
        // Until asked to stop, or until a node ends on its own (its error is the answer).
        let mut result = Ok(());
        tokio::select! {
            _ = shutdown => {}
            Some(ended) = served.join_next() => result = ended.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
        }
        let _ = stop_tx.send(true);
        while let Some(ended) = served.join_next().await {
            let ended = ended.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
            result = result.and(ended);
        }
        result
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
