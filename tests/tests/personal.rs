//! Residents' personal data (ID numbers, phones) on phones: the station clerk who takes an errand
//! and the department that handles it get the full values, sealed on their phones; a village head
//! browsing gets masked forms only; no phone's database file holds a number in clear, read byte by
//! byte and with the `sqlite3` tool; a document that carries a full number is refused; a remote
//! wipe takes the data and the key away.

use std::path::Path;

use gridlink_core::record::RecordDoc;
use gridlink_core::sync::protocol::{self, CONTENT_TYPE, DocChanges, DocId, SyncRequest, SyncResponse};
use gridlink_core::{Action, NewServiceRequest, Record, RecordBody, ServiceMode};
use gridlink_tests::{DEMO_PASSWORD, Phone, TestServer, http, token};

const ID: &str = "11010519491231002X";
const PHONE: &str = "13812345678";

/// Asserts that neither the store nor its write-ahead log holds `needle`, neither as bytes nor
/// in what `sqlite3 .dump` shows.
fn assert_not_on_disk(db: &Path, needle: &str, who: &str) {
    for file in [db.to_path_buf(), db.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{who}: {needle:.4}… in {}", file.display());
        }
    }
    let dump = std::process::Command::new("sqlite3").arg(db).arg(".dump").output().expect("the sqlite3 tool");
    assert!(dump.status.success());
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("CREATE TABLE personal"), "{who}: the dump is of a store");
    assert!(!text.contains(needle), "{who}: {needle:.4}… in the sqlite3 dump");
    // Blobs are dumped as hex: look for the hex of the number too.
    assert!(!text.to_ascii_lowercase().contains(&hex_of(needle)), "{who}: {needle:.4}… as hex in the dump");
}

fn hex_of(s: &str) -> String {
    hex_of_bytes(s.as_bytes())
}

fn hex_of_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn login(server: &TestServer, user: &str) -> Phone {
    Phone::login_with_password(&server.base, user, DEMO_PASSWORD)
}

#[test]
fn personal_data_reaches_only_those_who_need_it_and_is_never_in_clear_on_a_phone() {
    let server = TestServer::start_demo();
    let bianmin: String =
        server.state.db.reader().units().unwrap().into_iter().find(|u| u.department_key.as_deref() == Some("bianmin")).unwrap().code;
    let mut station = login(&server, "gt201-zhan");
    let mut head = login(&server, "gt201-shuji");
    let mut service_center = login(&server, "bianmin");
    station.sync().unwrap();

    // The clerk takes an errand with the resident's ID number and phone.
    let id = station
        .create_service_request(NewServiceRequest {
            item: "FW004".into(),
            mode: ServiceMode::Errand,
            station: None,
            resident_name: "张桂兰".into(),
            resident_id_number: Some(ID.into()),
            resident_phone: Some(PHONE.into()),
            materials_received: vec!["居民身份证".into(), "户口簿".into()],
            description: "老人行动不便,由代办员代办".into(),
        })
        .unwrap();
    let kept = station.personal(&id).unwrap().expect("the clerk keeps what she took");
    assert_eq!((kept.id_number.as_deref(), kept.phone.as_deref()), (Some(ID), Some(PHONE)));
    let RecordBody::ServiceRequest(f) = station.get(&id).unwrap().record.body else { panic!("a service request") };
    assert_eq!(f.resident.id_number.as_deref(), Some("1101**********002X"), "the document holds the masked form");
    assert_eq!(f.resident.phone.as_deref(), Some("138****5678"));
    station.act(&id, Action::Queue, "").unwrap();
    station
        .act(&id, Action::HandOff { to_unit: gridlink_tests::unit(&bianmin), batch_id: "P-1".into(), carrier: "代办员".into() }, "")
        .unwrap();
    station.sync().unwrap();

    // The server keeps the values beside the document: never in a change or a snapshot.
    {
        let conn = server.state.db.reader();
        let (data, _, _) = conn.personal(&id).unwrap().unwrap();
        assert!(data.contains(ID) && data.contains(PHONE));
        let mut blobs = vec![conn.snapshot(&id).unwrap().unwrap()];
        conn.record_changes(&id, &mut |bytes, _| {
            blobs.push(bytes);
            Ok(())
        })
        .unwrap();
        for blob in blobs {
            assert!(!blob.windows(ID.len()).any(|w| w == ID.as_bytes()), "an ID number inside the record's document");
        }
    }

    // The village head browses the record: masked forms only, nothing to unseal.
    head.sync().unwrap();
    let seen = head.get(&id).expect("the head sees the village's errand");
    let RecordBody::ServiceRequest(f) = seen.record.body else { panic!() };
    assert_eq!(f.resident.phone.as_deref(), Some("138****5678"));
    assert!(head.personal(&id).unwrap().is_none(), "a village head browsing gets no personal data");

    // The service center handling it gets the full values, sealed with its own key.
    service_center.sync().unwrap();
    let full = service_center.personal(&id).unwrap().expect("the department handling the errand needs them");
    assert_eq!(full.id_number.as_deref(), Some(ID));

    // A lost phone: its database file shows no number in clear.
    for (who, phone) in [("station", &station), ("village head", &head), ("service center", &service_center)] {
        let db = phone.dir.path().join("phone.db");
        assert_not_on_disk(&db, ID, who);
        assert_not_on_disk(&db, PHONE, who);
    }

    // An older or foreign client that writes the full number into a document is refused, and
    // the server keeps nothing of it.
    let forged = Record {
        id: "0190ab12-0000-7000-8000-000000000017".into(),
        provisional_no: "X-1".into(),
        case_no: None,
        created_at_ms: server.state.now_ms(),
        body: seen_body_with_clear_numbers(&station, &id),
        timeline: vec![station.get(&id).unwrap().record.timeline[0].clone()],
    };
    let mut doc = RecordDoc::create(&automerge::ActorId::random(), &forged, forged.created_at_ms).unwrap();
    let change = doc.last_local_change().unwrap().raw_bytes().to_vec();
    let req = SyncRequest {
        v: protocol::PROTOCOL_VERSION,
        cursor: None,
        push: vec![DocChanges { doc: DocId::parse(&forged.id).unwrap(), changes: vec![serde_bytes::ByteBuf::from(change)] }],
        page_bytes: None,
        whole_docs: true,
        personal: vec![],
        ..Default::default()
    };
    let resp = http()
        .post(format!("{}/api/v1/sync", server.base))
        .header("Authorization", format!("Bearer {}", token(&station)))
        .header("Content-Type", CONTENT_TYPE)
        .send(&protocol::encode(&req)[..])
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: SyncResponse = protocol::decode(&resp.into_body().read_to_vec().unwrap()).unwrap();
    assert_eq!(answer.rejected.len(), 1, "{answer:?}");
    assert!(answer.rejected[0].reason.contains("身份证号未遮蔽"), "{}", answer.rejected[0].reason);
    assert!(!answer.rejected[0].reason.contains(ID));
    assert!(server.state.db.reader().snapshot(&forged.id).unwrap().is_none(), "the forged record was not stored");

    // Remote wipe: the station's device is revoked; its next sync wipes the store, the key is
    // gone on the phone and on the server, and what was sealed cannot be read again.
    // A login again on the same phone keeps its key, so what it sealed stays readable.
    let old_key = station.data_key_bytes().unwrap();
    let again = station.engine.login(&mut station.client, "gt201-zhan", DEMO_PASSWORD, "测试手机").unwrap();
    station.device_id = again.device_id;
    assert_eq!(station.data_key_bytes().unwrap(), old_key);
    assert_eq!(station.personal(&id).unwrap().unwrap().id_number.as_deref(), Some(ID));
    let admin = login(&server, "admin");
    let resp = http()
        .post(format!("{}/api/v1/admin/devices/{}/revoke", server.base, station.device_id))
        .header("Authorization", format!("Bearer {}", token(&admin)))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(station.sync().is_err());
    assert!(!station.has_data_key());
    assert!(station.personal(&id).unwrap().is_none());
    assert!(station.personal_pending().unwrap().is_empty());
    assert!(!server.state.db.reader().device_keeps_key(&station.device_id).unwrap(), "the server forgot the revoked device's key");
    // Logged in again after the wipe, the phone gets a new key: nothing sealed before opens.
    let fresh = station.engine.login(&mut station.client, "gt201-zhan", DEMO_PASSWORD, "测试手机").unwrap();
    assert_ne!(fresh.data_key.as_deref(), Some(hex_of_bytes(&old_key).as_str()));
}

/// The body of the clerk's errand with the full numbers put back, as an old app wrote it.
fn seen_body_with_clear_numbers(station: &Phone, id: &str) -> RecordBody {
    let mut body = station.get(id).unwrap().record.body;
    if let RecordBody::ServiceRequest(f) = &mut body {
        f.resident.id_number = Some(ID.into());
        f.resident.phone = Some(PHONE.into());
    }
    body
}
