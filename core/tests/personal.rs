//! Personal data on the phone: kept sealed beside the document, updated by an edit, refused
//! without a key, gone after a wipe.

mod common;

use common::*;
use gridlink_core::{NewIncident, NewServiceRequest, Party, RecordBody, ServiceMode, ServiceRequestEdit};

fn errand(id_number: Option<&str>) -> NewServiceRequest {
    NewServiceRequest {
        item: "FW004".into(),
        mode: ServiceMode::Errand,
        station: None,
        resident_name: "张桂兰".into(),
        resident_id_number: id_number.map(Into::into),
        resident_phone: Some("13812345678".into()),
        materials_received: vec![],
        description: String::new(),
    }
}

#[test]
fn an_edited_phone_goes_to_the_sealed_data_and_the_document_gets_its_mask() {
    let mut station = Device::new(station_staff(), at(2026, 11, 23, 9));
    let id = station.create_service_request(errand(Some("11010519491231002X"))).unwrap();
    station.edit_service_request(&id, ServiceRequestEdit { resident_phone: Some("13900001111".into()), ..Default::default() }).unwrap();
    let RecordBody::ServiceRequest(f) = station.get(&id).unwrap().record.body else { panic!() };
    assert_eq!(f.resident.phone.as_deref(), Some("139****1111"));
    let p = station.personal(&id).unwrap().unwrap();
    assert_eq!((p.id_number.as_deref(), p.phone.as_deref()), (Some("11010519491231002X"), Some("13900001111")));
    assert_eq!(station.personal_pending().unwrap().len(), 1, "the server still lacks it");
    station.personal_delivered(std::slice::from_ref(&id)).unwrap();
    assert!(station.personal_pending().unwrap().is_empty());
}

#[test]
fn parties_phones_are_masked_in_the_document_too() {
    let mut grid = Device::new(grid_member(), at(2026, 11, 23, 9));
    let parties = vec![Party { name: "李四".into(), role: "申请人".into(), phone: Some("13700002222".into()) }];
    let id =
        grid.create_incident(NewIncident { category: "0101".into(), title: "邻里纠纷".into(), parties, ..Default::default() }).unwrap();
    let RecordBody::Incident(f) = grid.get(&id).unwrap().record.body else { panic!() };
    assert_eq!(f.parties[0].phone.as_deref(), Some("137****2222"));
    assert_eq!(grid.personal(&id).unwrap().unwrap().party_phones, vec![Some("13700002222".to_owned())]);
}

#[test]
fn without_a_key_no_personal_data_is_taken_and_a_wipe_forgets_the_key() {
    let mut station = Device::new(station_staff(), at(2026, 11, 23, 9));
    let id = station.create_service_request(errand(Some("11010519491231002X"))).unwrap();
    station.wipe().unwrap();
    assert!(!station.has_data_key());
    assert!(station.personal(&id).unwrap().is_none());
    station.set_identity(station_staff()).unwrap();
    let err = station.create_service_request(errand(Some("11010519491231002X"))).unwrap_err().to_string();
    assert!(err.contains("密钥") && !err.contains("1101"), "{err}");
    // Without ID number or phone nothing personal is kept, and no key is needed.
    let mut plain = errand(None);
    plain.resident_phone = None;
    station.create_service_request(plain).unwrap();
}
