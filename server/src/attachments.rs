//! Photos: uploaded by SHA-256 in resumable chunks, verified on arrival, size-limited, and served
//! with HTTP range support to those who may see a record that shows them.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::{AppError, AppResult};
use crate::storage::{Storage, UploadStep};

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

fn upload_state(conn: &dyn Storage, sha: &str) -> AppResult<Option<(u64, u64, bool)>> {
    Ok(conn.upload(sha)?.map(|(total, received, complete, _)| (total, received, complete)))
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

/// Part files being written now. A second upload of the same photo at the same moment is told
/// to resume later instead of writing the same file at once.
static WRITING: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

/// The right to write one part file, released on drop.
struct Writing(PathBuf);

impl Writing {
    fn take(part: &std::path::Path) -> Option<Self> {
        let mut busy = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(part.to_owned()).then(|| Writing(part.to_owned()))
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// What a chunk's file work found, for the writer to record.
enum Landed {
    /// The chunk is on disk; the photo has this many bytes so far.
    Part(u64),
    /// The whole photo is on disk under its final name, verified.
    Complete(u64),
    /// The photo did not match its hash; the part file is gone.
    Corrupt,
}

/// Writes a chunk at `offset` of the part file and makes it durable; after the last chunk,
/// verifies the photo and moves it to its final name. Blocking file work, done before the writer
/// is asked to record anything: the writer only records what is already durable.
fn land_chunk(
    final_path: &std::path::Path,
    part_path: &std::path::Path,
    sha: &str,
    offset: u64,
    total: u64,
    body: &[u8],
) -> AppResult<Landed> {
    let io = AppError::file;
    std::fs::create_dir_all(part_path.parent().expect("has a parent")).map_err(io)?;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(part_path).map_err(io)?;
    // A crash after writing but before recording leaves extra bytes: cut back to what is recorded.
    f.set_len(offset).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.write_all(body).map_err(io)?;
    f.sync_all().map_err(io)?;
    let received = offset + body.len() as u64;
    if received < total {
        return Ok(Landed::Part(received));
    }
    let bytes = std::fs::read(part_path).map_err(io)?;
    if hex::encode(Sha256::digest(&bytes)) != sha {
        std::fs::remove_file(part_path).map_err(io)?;
        return Ok(Landed::Corrupt);
    }
    std::fs::rename(part_path, final_path).map_err(io)?;
    Ok(Landed::Complete(received))
}

/// True when the photo already lies under its final name and matches its hash (a crash came
/// after the move and before the database recorded it).
fn already_landed(final_path: &std::path::Path, sha: &str) -> bool {
    std::fs::read(final_path).is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == sha)
}

/// `PUT /api/v1/attachments/{sha}?offset=N&total=T`: appends one chunk. A chunk at the wrong
/// offset gets 409 with the offset to resume from; the last chunk is verified against the hash.
///
/// The chunk is written and synced to disk outside the database's single writer (so a slow disk
/// never holds up other devices' sync rounds); the writer then records the new length only if no
/// one else moved it meanwhile.
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
    let Some(_writing) = Writing::take(&part_path) else {
        return Err(AppError::Conflict("该照片正在由另一次上传写入,请稍后从断点续传".into()));
    };
    let key = sha.clone();
    let known = state.db.read(move |c| upload_state(c, &key)).await?;
    let received = match known {
        Some((_, received, true)) => return Ok(Json(state_json(received, true)).into_response()),
        Some((total, _, _)) if total != q.total => return Err(AppError::Conflict("照片总大小与之前的上传不一致".into())),
        Some((_, received, false)) if q.offset != received => {
            return Ok((StatusCode::CONFLICT, Json(state_json(received, false))).into_response());
        }
        Some((_, received, false)) => received,
        None if q.offset != 0 => return Ok((StatusCode::CONFLICT, Json(state_json(0, false))).into_response()),
        None => 0,
    };
    let (fp, pp, key, total) = (final_path.clone(), part_path.clone(), sha.clone(), q.total);
    let landed = if already_landed(&final_path, &sha) {
        Landed::Complete(total)
    } else {
        tokio::task::spawn_blocking(move || land_chunk(&fp, &pp, &key, received, total, &body))
            .await
            .map_err(|e| AppError::Internal(format!("chunk write: {e}")))??
    };
    let now = state.now_ms();
    let person = auth.person.id.clone();
    state
        .db
        .write(move |c| {
            let (received, complete) = match landed {
                Landed::Part(n) => (n, false),
                Landed::Complete(n) => (n, true),
                Landed::Corrupt => {
                    c.upload_restart(&sha)?;
                    return Err(AppError::Unprocessable("照片校验失败,请重新上传".into()));
                }
            };
            // Recorded only over the length this chunk started from: what the disk holds.
            let step = UploadStep { sha256: &sha, total: q.total, from: q.offset, received, complete, uploader: &person, now_ms: now };
            if !c.upload_moved(&step)? {
                let (_, now_received, now_complete) = upload_state(c, &sha)?.unwrap_or((q.total, 0, false));
                return Ok((StatusCode::CONFLICT, Json(state_json(now_received, now_complete))).into_response());
            }
            Ok(Json(state_json(received, complete)).into_response())
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
            let Some((_, _, true, uploader)) = c.upload(&key)? else { return Ok(false) };
            if uploader == person.id {
                return Ok(true);
            }
            Ok(c.records_with_photo(&key)?.iter().any(|place| place.visible_to(&person)))
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

/// Puts a whole photo received in one piece (from the web console) on disk under its final
/// name, durably. Blocking file work: call it before the write that records the photo
/// ([`record_complete`]), never inside the writer. Written aside and renamed, so a crash never
/// leaves a half photo under its final name; a photo never recorded (its write failed) stays as a
/// harmless file named by its hash.
pub fn land_whole(state: &AppState, sha: &str, jpeg: &[u8]) -> AppResult<()> {
    valid_sha(sha)?;
    if jpeg.len() as u64 > state.settings.max_attachment_bytes {
        return Err(AppError::TooLarge(state.settings.max_attachment_bytes as usize));
    }
    let (final_path, _) = paths(state, sha);
    if already_landed(&final_path, sha) {
        return Ok(());
    }
    let whole = final_path.with_extension("whole");
    let io = AppError::file;
    std::fs::create_dir_all(whole.parent().expect("has a parent")).map_err(io)?;
    std::fs::write(&whole, jpeg).map_err(io)?;
    std::fs::File::open(&whole).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&whole, &final_path).map_err(io)?;
    Ok(())
}

/// Records a photo that [`land_whole`] put on disk as complete.
pub fn record_complete(conn: &dyn Storage, sha: &str, len: usize, uploader: &str, now_ms: i64) -> AppResult<()> {
    conn.upload_complete(sha, len as u64, uploader, now_ms)
}
