//! Personal data never appears in logs: the real server binary runs a scenario full of ID numbers,
//! phones, passwords and tokens with debug logging on, and its whole output is searched.

use std::io::Read;

use gridlink_core::sync::SyncEngine;
use gridlink_core::{Client, NewIncident, NewServiceRequest, Party, ServiceMode};
use gridlink_tests::process::{self, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_gridlink-server");
const ID_NUMBER: &str = "11010519491231002X";
const PHONE: &str = "13812345678";
const PARTY_PHONE: &str = "13987654321";
const PASSWORD: &str = "secret-pass-9";

#[test]
fn logs_carry_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("town.db");
    let bin: &std::path::Path = BIN.as_ref();
    process::import_csv(
        bin,
        &db,
        "units",
        "code,name,kind,parent,department_key\n532331101,广通镇,镇,,\n532331101201,广通社区,村,532331101,\n",
    );
    process::import_csv(bin, &db, "people", &format!("id,name,role,unit,password\nlijun,李军,便民服务站代办员,532331101201,{PASSWORD}\n"));
    let how = Serve { env: vec![("GRIDLINK_LOG", "debug")], stderr: true, ..Default::default() };
    let (mut server, base, mut out) = process::serve(bin, &db, how);
    let first = String::new();
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
    // Every line logged while answering a request names the request.
    let failed: Vec<&str> = logs.lines().filter(|l| l.contains("login failed")).collect();
    assert!(!failed.is_empty() && failed.iter().all(|l| l.contains("request_id=")), "{failed:?}");
    for secret in [ID_NUMBER, "110105194912310", PHONE, PARTY_PHONE, PASSWORD, login.token.as_str()] {
        assert!(!logs.contains(secret), "the logs contain personal or secret data ({} chars)", secret.len());
    }
}
