//! Configuration: command-line flags, then environment variables, then a TOML file, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::app::Settings;

/// The town server of Gridlink (网格通).
#[derive(Debug, Parser)]
#[command(name = "gridlink-server", version, about = "Gridlink town server: sync, accounts, routing, console")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "GRIDLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true, env = "GRIDLINK_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a town's database.
    Serve(ServeArgs),
    /// Start with a seeded demo town (广通镇) and print the logins.
    Demo(DemoArgs),
    /// Import units, people or catalogs (all rows or nothing).
    Import(ImportArgs),
    /// Create an API key for Open311 clients, acting as the given account.
    Apikey(ApiKeyArgs),
    /// Copy the database to a new file, safely while the server runs.
    Backup(BackupArgs),
    /// Put a backup in place of the database (the server must be stopped). Phones push again
    /// what the server acknowledged after the backup was taken.
    Restore(RestoreArgs),
    /// Check the configuration (file, flags, environment) and say what is wrong.
    CheckConfig(ServeArgs),
    /// Copy a town's SQLite database into an empty PostgreSQL database (all or nothing, checked),
    /// with the server stopped; its phones go on syncing against the new database.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The town's SQLite database.
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database (postgres://user:password@host:port/name), empty or holding this town.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The database to copy (default: from the configuration file).
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: Option<PathBuf>,
    /// The new backup file (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file to restore.
    #[arg(long)]
    pub from: PathBuf,
    /// The database to replace (default: from the configuration file).
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: Option<PathBuf>,
}

/// Options shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Case-number prefix (`GT` gives `GT-2026-000123`).
    #[arg(long, env = "GRIDLINK_CASE_PREFIX")]
    pub case_prefix: Option<String>,
    /// Directory for attachments (default: beside the database).
    #[arg(long, env = "GRIDLINK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How often the deadline sweeper looks for overdue items, in milliseconds (default 60000).
    #[arg(long, env = "GRIDLINK_SWEEP_INTERVAL_MS")]
    pub sweep_interval_ms: Option<u64>,
    /// TLS certificate chain (PEM). With `--tls-key`, the server speaks HTTPS only.
    #[arg(long, env = "GRIDLINK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for `--tls-cert`.
    #[arg(long, env = "GRIDLINK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// SQLite database file.
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "GRIDLINK_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "GRIDLINK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep the demo database in this file (default: a temporary directory).
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: Option<PathBuf>,
    /// A county (禄丰市 with two towns and the county center) instead of one town; with a
    /// PostgreSQL `--db` it runs as two server nodes, on the port of `--listen` and the next.
    #[arg(long)]
    pub county: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// SQLite database file.
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: PathBuf,
    #[command(subcommand)]
    pub what: ImportWhat,
}

#[derive(Debug, Args)]
pub struct ApiKeyArgs {
    /// SQLite database file.
    #[arg(long, env = "GRIDLINK_DB")]
    pub db: PathBuf,
    /// The account the key acts as (e.g. the hotline desk of the center).
    #[arg(long)]
    pub person: String,
    /// What the key is for.
    #[arg(long, default_value = "Open311")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// Org units, CSV: code,name,kind,parent,department_key
    Units { file: PathBuf },
    /// People, CSV: id,name,role,unit,password
    People { file: PathBuf },
    /// Catalogs, JSON: the incident-category file and the service-item file.
    Catalog { categories: PathBuf, items: PathBuf },
}

/// Settings that may come from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub db: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub case_prefix: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub token_days: Option<u32>,
    pub max_attachment_mb: Option<u64>,
    /// Mark the console's session cookie `Secure` (when served over HTTPS, e.g. behind a proxy).
    pub secure_cookies: Option<bool>,
    pub sweep_interval_ms: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl FileConfig {
    /// Reads the file, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("配置文件 {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("配置文件 {}: {e}", path.display()))
    }
}

/// Resolves the settings: flag or environment first, then the file, then the defaults.
/// `home` is the directory the data directory goes into by default ([`crate::db::Location::home`]).
pub fn settings(common: &CommonArgs, file: &FileConfig, home: &Path) -> Settings {
    let data_dir = common.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| home.join("gridlink-data"));
    Settings {
        case_prefix: common.case_prefix.clone().or_else(|| file.case_prefix.clone()).unwrap_or_else(|| "GT".into()),
        token_days: file.token_days.unwrap_or(90),
        max_attachment_bytes: file.max_attachment_mb.unwrap_or(10) << 20,
        data_dir,
        secure_cookies: file.secure_cookies.unwrap_or(false),
        sweep_interval_ms: common.sweep_interval_ms.or(file.sweep_interval_ms).unwrap_or(60_000).max(10),
    }
}

/// Checks a configuration as `serve` would use it (`check-config` takes `serve`'s flags); returns what is wrong (empty when sound). It
/// does not create or change anything.
pub fn check(args: &ServeArgs, file: &FileConfig) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    let db = args.db.clone().or_else(|| file.db.clone());
    match &db {
        None => problems.push("没有指定数据库文件(db)".to_owned()),
        Some(db) if let postgres @ crate::db::Location::Postgres(_) = crate::db::Location::parse(&db.to_string_lossy()) => {
            // Not connected to: checking the configuration changes nothing and reaches nothing.
            facts.push(format!("数据库: PostgreSQL {postgres}"));
            let s = settings(&args.common, file, Path::new("."));
            facts.push(format!("附件目录: {}(多个节点须共用同一目录)", s.data_dir.display()));
        }
        Some(db) => {
            facts.push(format!("数据库: {}", db.display()));
            let dir = db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() {
                problems.push(format!("数据库所在目录 {} 不存在", dir.display()));
            } else if !writable(dir) {
                problems.push(format!("数据库所在目录 {} 不可写", dir.display()));
            }
            if db.exists() && !db.is_file() {
                problems.push(format!("数据库 {} 不是文件", db.display()));
            }
            let s = settings(&args.common, file, db.parent().unwrap_or(Path::new("")));
            facts.push(format!("附件目录: {}", s.data_dir.display()));
            let existing = s.data_dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("."));
            if !existing.is_dir() || !writable(existing) {
                problems.push(format!("附件目录 {} 无法创建或不可写", s.data_dir.display()));
            }
            if !s.case_prefix.chars().all(|c| c.is_ascii_alphanumeric()) || s.case_prefix.is_empty() || s.case_prefix.len() > 8 {
                problems.push(format!("案卷编号前缀“{}”应为 1 到 8 个字母或数字", s.case_prefix));
            }
            if s.token_days == 0 {
                problems.push("token_days 不能为 0".to_owned());
            }
            facts.push(format!(
                "案卷编号前缀: {};登录有效期 {} 天;附件上限 {} MB",
                s.case_prefix,
                s.token_days,
                s.max_attachment_bytes >> 20
            ));
        }
    }
    let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid"));
    facts.push(format!("监听地址: {listen}"));
    match tls_paths(&args.common, file) {
        Err(e) => problems.push(e),
        Ok(Some((cert, key))) => {
            for (what, path) in [("TLS 证书", cert), ("TLS 私钥", key)] {
                if std::fs::File::open(&path).is_err() {
                    problems.push(format!("{what} {} 无法读取", path.display()));
                }
            }
            facts.push("HTTPS: 已配置".to_owned());
        }
        Ok(None) => facts.push("HTTPS: 未配置(请在前面放置 HTTPS 反向代理)".to_owned()),
    }
    (problems, facts)
}

fn writable(dir: &Path) -> bool {
    tempfile::tempfile_in(dir).is_ok()
}

/// The TLS certificate and key to serve with, from flags or the file; both or neither.
pub fn tls_paths(common: &CommonArgs, file: &FileConfig) -> Result<Option<(PathBuf, PathBuf)>, String> {
    let cert = common.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = common.tls_key.clone().or_else(|| file.tls_key.clone());
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => Err("TLS 需要同时配置证书(tls_cert)和私钥(tls_key)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_then_file_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridlink.toml");
        std::fs::write(&path, "case_prefix = \"LF\"\ntoken_days = 30\nmax_attachment_mb = 5\n").unwrap();
        let file = FileConfig::load(Some(&path)).unwrap();
        let none = CommonArgs { case_prefix: None, data_dir: None, sweep_interval_ms: None, tls_cert: None, tls_key: None };
        let s = settings(&none, &file, dir.path());
        assert_eq!((s.case_prefix.as_str(), s.token_days, s.max_attachment_bytes), ("LF", 30, 5 << 20));
        assert_eq!(s.data_dir, dir.path().join("gridlink-data"));
        let flag = CommonArgs {
            case_prefix: Some("GT".into()),
            data_dir: Some(dir.path().join("d")),
            sweep_interval_ms: None,
            tls_cert: None,
            tls_key: None,
        };
        let s = settings(&flag, &file, dir.path());
        assert_eq!((s.case_prefix.as_str(), s.data_dir), ("GT", dir.path().join("d")));
        let s = settings(&none, &FileConfig::default(), dir.path());
        assert_eq!((s.case_prefix.as_str(), s.token_days), ("GT", 90));
        // check-config: what is wrong, all of it, without creating anything.
        let missing = dir.path().join("no-such-dir/town.db");
        let bad = FileConfig { case_prefix: Some("G-T".into()), tls_cert: Some(dir.path().join("cert.pem")), ..Default::default() };
        let args = ServeArgs { db: Some(missing.clone()), listen: None, common: CommonArgs { tls_cert: None, tls_key: None, ..none } };
        let (problems, _) = check(&args, &bad);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("不存在") && problems[1].contains("G-T") && problems[2].contains("私钥"), "{problems:?}");
        assert!(!missing.parent().unwrap().exists());
        let good = ServeArgs {
            db: Some(dir.path().join("town.db")),
            listen: None,
            common: CommonArgs { tls_cert: None, tls_key: None, case_prefix: None, data_dir: None, sweep_interval_ms: None },
        };
        assert_eq!(check(&good, &FileConfig::default()).0, Vec::<String>::new());
        std::fs::write(&path, "case_prefx = \"typo\"\n").unwrap();
        let err = FileConfig::load(Some(&path)).unwrap_err();
        assert!(err.contains("case_prefx"), "a misspelt key is reported, not ignored: {err}");
    }
}
