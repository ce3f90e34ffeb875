//! Photos: uploaded by SHA-256 in resumable chunks, verified on arrival, size-limited, and served
//! with HTTP range support to those who may see a record that shows them.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::docs::ScopeEvent;
use crate::error::{AppError, AppResult};

/// Where chunk uploads resume.
#[derive(Debug, Deserialize)]
pub struct ChunkQuery {
    pub offset: u64,
    pub total: u64,
}

fn valid_sha(sha: &str) -> AppResult<()> {
    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(AppError::BadRequest("照片编号应为64位小写十六进制SHA-256".into()))
    }
}

fn paths(state: &AppState, sha: &str) -> (PathBuf, PathBuf) {
    let dir = state.settings.data_dir.join("attachments").join(&sha[..2]);
    (dir.join(sha), dir.join(format!("{sha}.part")))
}

fn upload_state(conn: &Connection, sha: &str) -> AppResult<Option<(u64, u64, bool)>> {
    Ok(conn
        .query_row("SELECT total, received, complete FROM attachments WHERE sha256 = ?1", [sha], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, bool>(2)?))
        })
        .optional()?)
}

fn state_json(received: u64, complete: bool) -> serde_json::Value {
    serde_json::json!({ "received": received, "complete": complete })
}

/// `GET /api/v1/attachments/{sha}/status`: how much of a photo the server has.
pub async fn status(State(state): State<AppState>, _auth: AuthDevice, Path(sha): Path<String>) -> AppResult<Json<serde_json::Value>> {
    valid_sha(&sha)?;
    let row = state.db.read(move |c| upload_state(c, &sha)).await?;
    let (_, received, complete) = row.ok_or(AppError::NotFound)?;
    Ok(Json(state_json(received, complete)))
}

/// `PUT /api/v1/attachments/{sha}?offset=N&total=T`: appends one chunk. A chunk at the wrong
/// offset gets 409 with the offset to resume from; the last chunk is verified against the hash.
pub async fn upload(
    State(state): State<AppState>,
    auth: AuthDevice,
    Path(sha): Path<String>,
    Query(q): Query<ChunkQuery>,
    body: Bytes,
) -> AppResult<Response> {
    valid_sha(&sha)?;
    let max = state.settings.max_attachment_bytes;
    if q.total == 0 || q.total > max {
        return Err(AppError::TooLarge(max as usize));
    }
    if q.offset + body.len() as u64 > q.total {
        return Err(AppError::BadRequest("分块超出照片总大小".into()));
    }
    let (final_path, part_path) = paths(&state, &sha);
    let now = state.now_ms();
    state
        .db
        .write(move |c| {
            let (total, received, complete) = match upload_state(c, &sha)? {
                Some(s) => s,
                None => {
                    c.execute(
                        "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES (?1, ?2, 0, 0, ?3, ?4)",
                        params![sha, q.total as i64, auth.person.id, now],
                    )?;
                    (q.total, 0, false)
                }
            };
            if complete {
                return Ok(Json(state_json(total, true)).into_response());
            }
            if total != q.total {
                return Err(AppError::Conflict("照片总大小与之前的上传不一致".into()));
            }
            if q.offset != received {
                return Ok((StatusCode::CONFLICT, Json(state_json(received, false))).into_response());
            }
            let io = AppError::file;
            std::fs::create_dir_all(part_path.parent().expect("has a parent")).map_err(io)?;
            let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&part_path).map_err(io)?;
            // A crash after writing but before recording leaves extra bytes: cut back to what is recorded.
            f.set_len(received).map_err(io)?;
            f.seek(SeekFrom::Start(received)).map_err(io)?;
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
            let received = received + body.len() as u64;
            if received < total {
                c.execute("UPDATE attachments SET received = ?1 WHERE sha256 = ?2", params![received as i64, sha])?;
                return Ok(Json(state_json(received, false)).into_response());
            }
            let bytes = std::fs::read(&part_path).map_err(io)?;
            if hex::encode(Sha256::digest(&bytes)) != sha {
                std::fs::remove_file(&part_path).map_err(io)?;
                c.execute("UPDATE attachments SET received = 0 WHERE sha256 = ?1", [&sha])?;
                return Err(AppError::Unprocessable("照片校验失败,请重新上传".into()));
            }
            std::fs::rename(&part_path, &final_path).map_err(io)?;
            c.execute("UPDATE attachments SET received = ?1, complete = 1 WHERE sha256 = ?2", params![received as i64, sha])?;
            Ok(Json(state_json(received, true)).into_response())
        })
        .await
}

/// `GET /api/v1/attachments/{sha}`: the photo, with `Range` support, for its uploader and for
/// everyone who may see a record that shows it.
pub async fn download(State(state): State<AppState>, auth: AuthDevice, Path(sha): Path<String>, req: Request) -> AppResult<Response> {
    valid_sha(&sha)?;
    let person = auth.person.clone();
    let key = sha.clone();
    let allowed = state
        .db
        .read(move |c| {
            let row: Option<(String, bool)> = c
                .query_row("SELECT uploader, complete FROM attachments WHERE sha256 = ?1", [&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((uploader, true)) = row else { return Ok(false) };
            if uploader == person.id {
                return Ok(true);
            }
            let mut stmt = c.prepare(
                "SELECT d.id, d.location, d.holder, d.reporter FROM attachment_refs r JOIN docs d ON d.id = r.doc_id WHERE r.sha256 = ?1",
            )?;
            let rows = stmt
                .query_map([&key], |r| Ok(ScopeEvent { doc_id: r.get(0)?, location: r.get(1)?, holder: r.get(2)?, reporter: r.get(3)? }))?;
            for row in rows {
                if row?.visible_to(&person) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await?;
    if !allowed {
        return Err(AppError::NotFound);
    }
    let (final_path, _) = paths(&state, &sha);
    let served = tower_http::services::ServeFile::new_with_mime(final_path, &"image/jpeg".parse().expect("valid mime"))
        .oneshot(req)
        .await
        .map_err(|e| AppError::Internal(format!("serve file: {e}")))?;
    Ok(served.map(Body::new))
}

/// Stores a whole photo received in one piece (from the web console), marked complete.
pub fn store_complete(conn: &Connection, state: &AppState, sha: &str, jpeg: &[u8], uploader: &str, now_ms: i64) -> AppResult<()> {
    valid_sha(sha)?;
    if jpeg.len() as u64 > state.settings.max_attachment_bytes {
        return Err(AppError::TooLarge(state.settings.max_attachment_bytes as usize));
    }
    if upload_state(conn, sha)?.is_some_and(|(_, _, complete)| complete) {
        return Ok(());
    }
    let (final_path, part_path) = paths(state, sha);
    let io = AppError::file;
    std::fs::create_dir_all(part_path.parent().expect("has a parent")).map_err(io)?;
    // Written aside and renamed: a crash never leaves a half photo under its final name.
    std::fs::write(&part_path, jpeg).map_err(io)?;
    std::fs::File::open(&part_path).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&part_path, &final_path).map_err(io)?;
    conn.execute(
        "INSERT INTO attachments(sha256, total, received, complete, uploader, created_ms) VALUES (?1, ?2, ?2, 1, ?3, ?4)
         ON CONFLICT(sha256) DO UPDATE SET total = excluded.total, received = excluded.total, complete = 1",
        params![sha, jpeg.len() as i64, uploader, now_ms],
    )?;
    Ok(())
}
