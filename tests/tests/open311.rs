//! Open311 GeoReport v2 to the letter, against a real server: the spec's field lists in JSON and
//! XML, discovery, filters, input limits, errors in the spec's shape everywhere under `/open311/`,
//! masked free text, and outside reports placed in the grid that contains their point.

use std::collections::BTreeSet;

use gridlink_tests::*;
use serde_json::Value;

/// The spec's fields of a service (GET services).
const SERVICE_FIELDS: &[&str] = &["service_code", "service_name", "description", "metadata", "type", "keywords", "group"];
/// The spec's fields of a service request (GET requests).
const REQUEST_FIELDS: &[&str] = &[
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
];

/// (status, content type, body) of a request.
fn call(method: &str, url: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_vec())
        .unwrap();
    let resp = http().run(req).unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ct, resp.into_body().read_to_vec().unwrap())
}

/// A POST announcing a 3 MB form, of which just over the 2 MiB limit is sent — all the server
/// needs to refuse it — before the answer is read; (status, content type, body). Sent by hand: a
/// client that goes on writing after the server answered and closed meets a broken pipe.
fn oversized_post(base: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /open311/v2/requests.json HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        3 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&vec![b'a'; (2 << 20) + 1]);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let ct = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned)).unwrap_or_default();
    (status, ct, body.to_owned())
}

fn get_json(url: &str) -> (u16, Value) {
    let (s, ct, body) = call("GET", url, b"");
    assert_eq!(ct, "application/json; charset=utf-8", "{url}");
    (s, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body))))
}

fn post(server: &TestServer, ext: &str, form: &str) -> (u16, Vec<u8>) {
    let (s, _, body) = call("POST", &format!("{}/open311/v2/requests.{ext}", server.base), form.as_bytes());
    (s, body)
}

/// Element paths of an XML document (`root/child/…`), with the text of leaf elements.
fn xml_paths(bytes: &[u8]) -> Vec<(String, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let (mut stack, mut out, mut buf) = (Vec::<String>::new(), Vec::new(), Vec::new());
    loop {
        match reader.read_event_into(&mut buf).unwrap_or_else(|e| panic!("not XML: {e}: {}", String::from_utf8_lossy(bytes))) {
            Event::Start(e) => {
                stack.push(e.name().0.to_owned());
                out.push((stack.join("/"), String::new()));
            }
            Event::Empty(e) => {
                let name = e.name().0.to_owned();
                out.push((format!("{}/{name}", stack.join("/")), String::new()));
            }
            Event::Text(t) => {
                if let Some(last) = out.last_mut() {
                    last.1.push_str(&quick_xml::escape::unescape(&t.into_inner()).unwrap());
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

fn has(paths: &[(String, String)], path: &str) -> bool {
    paths.iter().any(|(p, _)| p == path)
}

fn text_of<'a>(paths: &'a [(String, String)], path: &str) -> &'a str {
    paths.iter().find(|(p, _)| p == path).map_or("", |(_, t)| t.as_str())
}

fn form(key: &str, extra: &str) -> String {
    format!("api_key={key}&service_code=0802&address_string=%E8%80%81%E8%A1%97{extra}")
}

#[test]
fn georeport_v2_to_the_letter_in_json_and_xml() {
    let server = TestServer::start();
    let key = gridlink_server::open311::create_api_key(&*server.state.db.writer(), "center", "12345热线", 0).unwrap();
    let base = format!("{}/open311/v2", server.base);

    // Discovery, both formats, with the key service text.
    let (s, d) = get_json(&format!("{base}/discovery.json"));
    assert_eq!(s, 200);
    for field in ["changeset", "contact", "key_service", "endpoints"] {
        assert!(d.get(field).is_some(), "discovery lacks {field}: {d}");
    }
    assert!(d["key_service"].as_str().unwrap().contains("api_key"));
    let e = &d["endpoints"][0];
    for field in ["specification", "url", "changeset", "type", "formats"] {
        assert!(e.get(field).is_some(), "endpoint lacks {field}: {e}");
    }
    assert_eq!(e["url"], format!("{}/open311/v2", server.base));
    let (s, ct, xml) = call("GET", &format!("{base}/discovery.xml"), b"");
    assert_eq!((s, ct.as_str()), (200, "text/xml; charset=utf-8"));
    let x = xml_paths(&xml);
    for path in ["discovery/key_service", "discovery/endpoints/endpoint/url", "discovery/endpoints/endpoint/formats/format"] {
        assert!(has(&x, path), "{path} missing: {x:?}");
    }

    // Services in both formats, each with the spec's fields.
    let (_, services) = get_json(&format!("{base}/services.json"));
    let n = services.as_array().unwrap().len();
    assert!(n >= 40);
    for svc in services.as_array().unwrap() {
        for field in SERVICE_FIELDS {
            assert!(svc.get(*field).is_some(), "service lacks {field}");
        }
    }
    let (_, _, xml) = call("GET", &format!("{base}/services.xml"), b"");
    let x = xml_paths(&xml);
    assert_eq!(x.iter().filter(|(p, _)| p == "services/service").count(), n);
    for field in SERVICE_FIELDS {
        assert_eq!(x.iter().filter(|(p, _)| *p == format!("services/service/{field}")).count(), n, "{field}");
    }

    // POST in XML; a photo link, personal numbers in the text, an empty optional phone.
    let (s, body) = post(
        &server,
        "xml",
        &form(
            &key,
            "&media_url=https%3A%2F%2Fphotos.example.org%2Fa.jpg&phone=&lat=25.13&long=102.05&description=%E8%81%94%E7%B3%BB13812345678%20%E8%BA%AB%E4%BB%BD%E8%AF%8111010519491231002X",
        ),
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let x = xml_paths(&body);
    let id = text_of(&x, "service_requests/request/service_request_id").to_owned();
    assert!(id.starts_with("GT-"), "{x:?}");
    assert!(has(&x, "service_requests/request/service_notice") && has(&x, "service_requests/request/account_id"));

    // The request in both formats: every field, the link kept, numbers masked.
    let (s, list) = get_json(&format!("{base}/requests/{id}.json?api_key={key}"));
    assert_eq!(s, 200);
    let one = &list[0];
    for field in REQUEST_FIELDS {
        assert!(one.get(*field).is_some(), "request lacks {field}: {one}");
    }
    assert_eq!(one["media_url"], "https://photos.example.org/a.jpg");
    let text = one["description"].as_str().unwrap();
    assert!(text.contains("138****5678") && text.contains("1101**********002X") && !text.contains("13812345678"), "{text}");
    let (s, _, xml) = call("GET", &format!("{base}/requests/{id}.xml?api_key={key}"), b"");
    assert_eq!(s, 200);
    let x = xml_paths(&xml);
    for field in REQUEST_FIELDS {
        assert!(has(&x, &format!("service_requests/request/{field}")), "XML request lacks {field}");
    }
    assert_eq!(text_of(&x, "service_requests/request/media_url"), "https://photos.example.org/a.jpg");
    // The console shows the link on the record page.
    let center = server.phone("center");
    let doc_id: String = server.state.db.reader().record_with_case_no(&id, "").unwrap().expect("a record of that number");
    let page = http()
        .get(format!("{}/console/records/{doc_id}", server.base))
        .header("Cookie", format!("gl_session={}", token(&center)))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(page.contains("照片链接") && page.contains("https://photos.example.org/a.jpg"));

    // A second request of another service, JSON.
    let (s, body) =
        post(&server, "json", &format!("api_key={key}&service_code=0501&description=%E5%9E%83%E5%9C%BE&address_string=%E4%B8%9C%E8%A1%97"));
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
    let second: Value = serde_json::from_slice(&body).unwrap();
    let second = second[0]["service_request_id"].as_str().unwrap().to_owned();

    // Filters: comma lists, empty parameters as not given, service_request_id over everything.
    let ids = |url: &str| -> BTreeSet<String> {
        let (s, v) = get_json(&format!("{base}/requests.json?api_key={key}{url}"));
        assert_eq!(s, 200, "{url}: {v}");
        v.as_array().unwrap().iter().map(|r| r["service_request_id"].as_str().unwrap().to_owned()).collect()
    };
    let both: BTreeSet<String> = [id.clone(), second.clone()].into();
    assert_eq!(ids(""), both);
    assert_eq!(ids("&service_code=0802,0501"), both);
    assert_eq!(ids("&service_code=0501"), [second.clone()].into());
    assert_eq!(ids("&service_code="), both, "an empty service_code is not given");
    assert_eq!(ids("&status=&start_date=&end_date="), both);
    assert_eq!(ids("&status=open,closed"), both);
    assert_eq!(ids("&status=closed"), BTreeSet::new());
    assert_eq!(ids(&format!("&service_request_id={id}&status=closed&service_code=0501")), [id.clone()].into(), "the id overrides");
    assert_eq!(ids(&format!("&service_request_id={id},{second}")), both);
    assert_eq!(ids("&start_date=2099-01-01T00:00:00Z"), BTreeSet::new());

    // Bad input: refused in the spec's shape, with the status the spec gives; nothing stored.
    let count = || server.state.db.reader().record_ids().unwrap().len() as i64;
    let before = count();
    let long = "%E8%A1%97".repeat(201);
    let cases: Vec<(String, u16)> = vec![
        (format!("api_key={key}&service_code=0802&description=x"), 400), // no location
        (format!("api_key={key}&service_code=9999&description=x&address_string=y"), 404), // unknown service
        (format!("api_key={key}&service_code=0802&description=%FF%FE&address_string=y"), 400), // not UTF-8
        (format!("api_key={key}&service_code=0802&description=x&address_string={long}"), 400),
        (format!("api_key={key}&service_code=0802&description=x&address_string=y&first_name={}", "a".repeat(31)), 400),
        (format!("api_key={key}&service_code=0802&description=x&address_string=y&media_url=javascript:alert(1)"), 400),
        (format!("api_key={key}&service_code=0802&description=x&lat=91&long=102"), 400),
        (format!("api_key={key}&service_code=0802&description=x&lat=abc&long=102"), 400),
        ("api_key=wrong&service_code=0802&description=x&address_string=y".into(), 403),
        (format!("api_key={key}&service_code=0802&address_string=y"), 400), // no description
    ];
    for (body, status) in &cases {
        for ext in ["json", "xml"] {
            let (s, bytes) = post(&server, ext, body);
            assert_eq!(s, *status, "{body}: {}", String::from_utf8_lossy(&bytes));
            if ext == "json" {
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v[0]["code"], *status);
                assert!(v[0]["description"].as_str().unwrap().chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "{v}");
            } else {
                let x = xml_paths(&bytes);
                assert_eq!(text_of(&x, "errors/error/code"), status.to_string());
                assert!(!text_of(&x, "errors/error/description").is_empty());
            }
        }
    }
    assert_eq!(count(), before, "a refused request stores nothing");

    // Router-level errors under /open311/ answer in the spec's shape too.
    for (method, url, body, status) in [
        ("GET", format!("{base}/nothing.json"), &b""[..], 404),
        ("GET", format!("{}/open311/elsewhere", server.base), &b""[..], 404),
        ("GET", format!("{base}/requests/{id}"), &b""[..], 404),
        ("GET", format!("{base}/requests.json?api_key={key}&status=%FF"), &b""[..], 400),
        ("GET", format!("{base}/requests.json?api_key={key}&status=pending"), &b""[..], 400),
        ("GET", format!("{base}/requests.json"), &b""[..], 403),
        ("GET", format!("{base}/requests/GT-1999-000001.json?api_key={key}"), &b""[..], 404),
        ("DELETE", format!("{base}/requests.json"), &b""[..], 405),
    ] {
        let (s, ct, bytes) = call(method, &url, body);
        assert_eq!(s, status, "{method} {url}: {}", String::from_utf8_lossy(&bytes));
        assert_eq!(ct, "application/json; charset=utf-8", "{method} {url}");
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{method} {url}: {}", String::from_utf8_lossy(&bytes)));
        assert!(v[0]["code"] == status && v[0]["description"].is_string(), "{method} {url}: {v}");
    }
    // A body over the limit, announced by its length: refused before it is read. (Sent by hand:
    // the server answers at once and closes, and a client still writing 3 MB sees a broken pipe.)
    let (status, ct, body) = oversized_post(&server.base);
    assert_eq!((status, ct.as_str()), (413, "application/json; charset=utf-8"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v[0]["code"] == 413 && v[0]["description"].is_string(), "{v}");
    let (s, ct, bytes) = call("GET", &format!("{base}/requests.xml?api_key=wrong"), b"");
    assert_eq!((s, ct.as_str()), (403, "text/xml; charset=utf-8"));
    assert_eq!(text_of(&xml_paths(&bytes), "errors/error/code"), "403");
}

#[test]
fn outside_reports_land_in_the_grid_that_contains_their_point() {
    let server = TestServer::start();
    let key = gridlink_server::open311::create_api_key(&*server.state.db.writer(), "center", "12345热线", 0).unwrap();
    // Three grids side by side, 0.01° wide, as the console map draws them ([lon, lat] corners).
    for (i, grid) in [GRID_A, GRID_B, GRID_C].iter().enumerate() {
        let x = 102.0 + 0.01 * i as f64;
        let corners = serde_json::json!([[x, 25.0], [x + 0.01, 25.0], [x + 0.01, 25.01], [x, 25.01]]);
        server.state.db.writer().set_boundary(grid, Some(&corners.to_string())).unwrap();
    }
    let base = format!("{}/open311/v2", server.base);
    let file = |extra: &str| -> (u16, Value) {
        let (s, body) = post(&server, "json", &format!("api_key={key}&service_code=0501&description=%E5%9E%83%E5%9C%BE{extra}"));
        (s, serde_json::from_slice(&body).unwrap())
    };
    let mut placed = Vec::new();
    for (i, grid) in [GRID_A, GRID_B, GRID_C].iter().enumerate() {
        let lon = 102.005 + 0.01 * i as f64;
        let (s, v) = file(&format!("&lat=25.004&long={lon}"));
        assert_eq!(s, 201, "{v}");
        let no = v[0]["service_request_id"].as_str().unwrap().to_owned();
        let (_, r) = get_json(&format!("{base}/requests/{no}.json?api_key={key}"));
        assert_eq!(r[0]["address_id"], *grid, "a point in {grid} lands there");
        placed.push(no);
    }
    // The village of grid C (another village) receives its report on its phones; grid A's
    // member receives only the one in grid A.
    let mut village2 = server.phone("village2");
    village2.sync().unwrap();
    let shown: Vec<String> = village2.list(&Default::default()).unwrap().into_iter().map(|r| r.display_no).collect();
    assert_eq!(shown, vec![placed[2].clone()]);
    let mut grid_a = server.phone("grid_a");
    grid_a.sync().unwrap();
    assert_eq!(grid_a.record_count().unwrap(), 1);

    // Beijing is not in this town: refused, nothing stored.
    let (s, v) = file("&lat=39.9042&long=116.4074");
    assert_eq!(s, 400, "{v}");
    assert!(v[0]["description"].as_str().unwrap().contains("不在本镇任何网格内"), "{v}");
    // By address alone it lands at the key account's unit (the town center).
    let (s, v) = file("&address_string=%E4%B8%9C%E8%A1%974%E5%8F%B7");
    assert_eq!(s, 201, "{v}");
    let no = v[0]["service_request_id"].as_str().unwrap();
    let (_, r) = get_json(&format!("{base}/requests/{no}.json?api_key={key}"));
    assert_eq!(r[0]["address_id"], TOWN);
    let total = server.state.db.reader().record_ids().unwrap().len() as i64;
    assert_eq!(total, 4);
}
