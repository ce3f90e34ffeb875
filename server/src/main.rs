use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gridlink_core::SystemClock;
use gridlink_server::config::{Cli, Command, FileConfig, settings, tls_paths};
use gridlink_server::db::Location;
use gridlink_server::{build_state_at, demo, import, launch, launch_tls};
use tracing_subscriber::EnvFilter;

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
            serve(state, listen, None, tls)
        }
        Command::Demo(args) => {
            let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            let db = args.db.clone().unwrap_or_else(|| tmp.path().join("gridlink-demo.db"));
            let location = Location::parse(&db.to_string_lossy());
            let state = build_state_at(settings(&args.common, &file, &location.home()), &location, Arc::new(SystemClock))
                .map_err(|e| e.for_operator())?;
            let logins = demo::seed(&state).map_err(|e| e.to_string())?;
            serve(state, args.listen, Some(logins), tls_paths(&args.common, &file)?)
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

fn serve(
    state: gridlink_server::AppState,
    listen: std::net::SocketAddr,
    demo: Option<demo::DemoLogins>,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("无法监听 {listen}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
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
        let served = match tls {
            Some(tls) => launch_tls(state, listener, tls, shutdown).await,
            None => launch(state, tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?, shutdown).await,
        };
        served.map_err(|e| e.to_string())
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
