//! Photo chunks through the real upload endpoint: the hash, offset, total and body all come
//! from the input; answers must be 2xx/4xx, never a crash or a 5xx.
#![no_main]
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let town = gridlink_fuzz::town();
    let (head, body) = data.split_at(5);
    let sha = match head[0] % 4 {
        0 => hex::encode(sha2::Sha256::digest(body)),
        1 => "../../etc/passwd".into(),
        2 => hex::encode(&head[..4]).repeat(8),
        _ => String::from_utf8_lossy(body.get(..body.len().min(70)).unwrap_or_default()).replace(['/', '?', '#', ' '], "%20"),
    };
    let offset = u64::from(head[1]) * 7;
    let total = u64::from(u16::from_le_bytes([head[2], head[3]]));
    let Ok(req) = Request::put(format!("/api/v1/attachments/{sha}?offset={offset}&total={total}"))
        .header("authorization", format!("Bearer {}", town.token))
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let status = town.call(req);
    assert!(status < 500, "upload answered {status}");
});
