//! Open311 input: a form-encoded POST (with a valid key, so parsing and validation run) and a
//! list query, through the real router; never a crash or a 5xx.
#![no_main]
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let town = gridlink_fuzz::town();
    let mut body = format!("api_key={}&", town.api_key).into_bytes();
    body.extend_from_slice(data);
    let req = Request::post("/open311/v2/requests.json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let status = town.call(req);
    assert!(status < 500, "POST answered {status}");
    if let Ok(q) = std::str::from_utf8(data)
        && let Ok(req) = Request::get(format!("/open311/v2/requests.json?{q}")).body(Body::empty())
    {
        let status = town.call(req);
        assert!(status < 500, "GET answered {status}");
    }
});
