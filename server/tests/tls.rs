//! HTTPS with rustls when a certificate is configured: the real binary, a certificate made for
//! the test, a client that trusts it, one that does not, and plain HTTP refused.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

#[test]
fn serves_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("town.crt"), dir.path().join("town.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("town.db"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("GRIDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{line}");

    let trusting: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![Certificate::from_der(made.cert.der()).to_owned()]))).build(),
        )
        .build()
        .into();
    let body = trusting.get(format!("{base}/healthz")).call().unwrap().into_body().read_to_string().unwrap();
    assert_eq!(body, "ok");
    let page = trusting.get(format!("{base}/console/login")).call().unwrap();
    assert!(page.headers().get("content-security-policy").is_some());

    // A client that does not trust the certificate refuses to talk; plain HTTP gets nothing.
    assert!(ureq::get(format!("{base}/healthz")).call().is_err(), "an untrusted certificate was accepted");
    let plain = base.replace("https://", "http://");
    assert!(ureq::get(format!("{plain}/healthz")).call().is_err(), "plain HTTP was served on the TLS port");
    child.kill().unwrap();
    let _ = child.wait();

    // A key that does not exist: a clear error, and the server does not start.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("town.db"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("无法读取 TLS 证书"), "{}", String::from_utf8_lossy(&out.stderr));
}
