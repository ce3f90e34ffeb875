//! HTTPS with rustls when a certificate is configured: the real binary, a certificate made for
//! the test, a client that trusts it, one that does not, and plain HTTP refused.

use std::sync::Arc;

use gridlink_tests::process::{self, Serve};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");

#[test]
fn serves_https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("town.crt"), dir.path().join("town.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();

    let args = vec!["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()];
    let (mut child, base, _) = process::serve(BIN.as_ref(), &dir.path().join("town.db"), Serve { args, ..Default::default() });
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

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
    let out = std::process::Command::new(BIN)
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
