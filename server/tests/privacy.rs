//! Personal data never appears in logs: the real server binary runs a scenario full of ID numbers,
//! phones, passwords and tokens with debug logging on, and its whole output is searched.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident, NewServiceRequest, Party, ServiceMode};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");
const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "13812345678";
const PARTY_PHONE: &str = "13987654321";
const PASSWORD: &str = "secret-pass-9";

#[test]
fn logs_carry_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("town.db");
    let csv = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let units = csv("u.csv", "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n");
    let people = csv("p.csv", &format!("id,name,role,unit,password\nlijun,李军,便民服务站代办员,532331101201,{PASSWORD}\n"));
    for (what, f) in [("units", &units), ("people", &people)] {
        let out = Command::new(BIN).args(["import", "--db"]).arg(&db).arg(what).arg(f).output().unwrap();
        assert!(out.status.success());
    }
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("GRIDLINK_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let base = first.trim().rsplit(' ').next().unwrap().to_owned();
    let mut stderr = server.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });

    let mut phone = Client::open(dir.path().join("phone.db")).unwrap();
    let engine = SyncEngine::http(&base);
    assert!(engine.login(&mut phone, "lijun", "wrong-password", "手机").is_err());
    let login = engine.login(&mut phone, "lijun", PASSWORD, "手机").unwrap();
    phone
        .create_service_request(NewServiceRequest {
            item: "FW004".into(),
            mode: ServiceMode::Errand,
            station: None,
            resident_name: "张桂兰".into(),
            resident_id_number: Some(ID_NUMBER.into()),
            resident_phone: Some(PHONE.into()),
            materials_received: vec![],
            description: format!("联系电话{PHONE}"),
        })
        .unwrap();
    phone
        .create_incident(NewIncident {
            category: "0101".into(),
            title: "邻里纠纷".into(),
            parties: vec![Party { name: "王某".into(), role: "申请人".into(), phone: Some(PARTY_PHONE.into()) }],
            ..Default::default()
        })
        .unwrap();
    engine.sync_once(&mut phone).unwrap();
    // A forged change and a bad request, so error paths log too.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let _ = agent.post(format!("{base}/api/v1/sync")).header("Authorization", format!("Bearer {}", login.token)).send(&b"junk"[..]);
    let _ = agent.get(format!("{base}/api/v1/records/nope")).header("Authorization", "Bearer not-a-token").call();

    server.kill().unwrap();
    server.wait().unwrap();
    let logs = format!("{first}{}{}", out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(logs.contains("login"), "debug logging was on: {}", &logs[..logs.len().min(500)]);
    for secret in [ID_NUMBER, "110105194912310", PHONE, PARTY_PHONE, PASSWORD, login.token.as_str()] {
        assert!(!logs.contains(secret), "the logs contain personal or secret data ({} chars)", secret.len());
    }
}
