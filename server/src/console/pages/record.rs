//! A record's page and the workflow actions taken from it.

use crate::storage::Storage;
use std::collections::HashMap;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use gridlink_core::calendar::TimeLimit;
use gridlink_core::org::access;
use gridlink_core::sync::validate::scope_of;
use gridlink_core::workflow::ActionKind;
use gridlink_core::{Access, Action, ActionParams, Param};
use serde::Deserialize;

use crate::app::AppState;
use crate::console::views::{self, ActionForm, Chrome, Names, RecordDetail};
use crate::console::{PageResult, Session, html};
use crate::error::{AppError, AppResult};
use crate::records::{act_as, load_doc, read_for};
use chrono::TimeZone as _;

use super::*;

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    chrome: Chrome,
    r: RecordDetail,
    actions: Vec<ActionForm>,
    done: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RecordQuery {
    pub(super) done: Option<String>,
}

fn record_page(
    state: &AppState,
    session: &Session,
    id: String,
    done: Option<String>,
    error: Option<String>,
) -> impl FnOnce(&dyn Storage) -> AppResult<RecordPage> + Send + 'static {
    let (st, s) = (state.clone(), session.clone());
    move |c| {
        let (record, _, access) = read_for(c, &st.server_actor, &id, s.person())?;
        let names = Names::load(c, &st.catalog)?;
        let folded = record.fold();
        let r = views::detail(&record, &folded, &names, &st.calendar, access, st.now_ms());
        let actions = views::action_forms(&record, &folded, s.person(), access, &names, st.now_ms());
        let done = done.and_then(|k| ActionKind::parse(&k)).map(|k| format!("已办理:{}", k.label()));
        Ok(RecordPage { chrome: chrome(&s, &names, &format!("{} {}", r.no, r.title), "", true), r, actions, done, error })
    }
}

/// `GET /console/records/{id}`: a record with its full timeline and the actions open to me.
/// Another unit's record answers 404, as if it did not exist.
pub async fn record(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<RecordQuery>,
) -> PageResult<Response> {
    let page = state.db.read(record_page(&state, &session, id, q.done, None)).await?;
    Ok(html(&page))
}

struct ActForm {
    fields: HashMap<String, String>,
    materials: Vec<String>,
    photo: Option<Vec<u8>>,
}

async fn read_act_form(mut mp: Multipart) -> AppResult<ActForm> {
    let bad = |e: axum::extract::multipart::MultipartError| AppError::BadRequest(format!("表单数据无效:{}", e.body_text()));
    let mut form = ActForm { fields: HashMap::new(), materials: Vec::new(), photo: None };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "photo" {
            let data = field.bytes().await.map_err(bad)?;
            if !data.is_empty() {
                form.photo = Some(data.to_vec());
            }
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        if name == "materials" {
            form.materials.push(text);
        } else if form.fields.len() < 20 {
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

fn field<'a>(form: &'a ActForm, name: &str) -> &'a str {
    form.fields.get(name).map_or("", |s| s.trim())
}

fn satisfaction(form: &ActForm) -> AppResult<u8> {
    field(form, "satisfaction")
        .parse::<u8>()
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| AppError::BadRequest("请选择满意度(1–5)".into()))
}

/// The action a submitted form asks for.
/// The action the form asks for, built by the core from the inputs that action takes
/// (`Action::from_params`); the form's own units (days, a date) are turned into the core's here.
fn action_of(state: &AppState, form: &ActForm) -> AppResult<Action> {
    let kind = ActionKind::parse(field(form, "kind")).ok_or_else(|| AppError::BadRequest("未知的操作".into()))?;
    if !views::console_offers(kind) {
        return Err(AppError::BadRequest("此操作不能在此处办理".into()));
    }
    let now = state.now_ms();
    let mut p = ActionParams::default();
    for param in kind.params() {
        match param {
            Param::ToUnit => p.to_unit = Some(field(form, "to_unit").to_owned()).filter(|u| !u.is_empty()),
            Param::Deadline => {
                p.deadline_ms = match field(form, "days") {
                    "" => None,
                    d => {
                        let days = d
                            .parse::<u32>()
                            .ok()
                            .filter(|d| (1..=365).contains(d))
                            .ok_or_else(|| AppError::BadRequest("办理期限应为 1–365 个工作日".into()))?;
                        Some(state.calendar.deadline(now, TimeLimit::WorkingDays(days)))
                    }
                }
            }
            Param::Until => {
                let day = chrono::NaiveDate::parse_from_str(field(form, "until"), "%Y-%m-%d")
                    .map_err(|_| AppError::BadRequest("请填写延期至的日期".into()))?;
                let next = day.succ_opt().ok_or_else(|| AppError::BadRequest("日期无效".into()))?;
                let midnight = gridlink_core::calendar::china_tz().from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"));
                p.until_ms = Some(midnight.single().expect("fixed offset").timestamp_millis());
            }
            Param::Satisfaction => p.satisfaction = Some(satisfaction(form)?),
            Param::Materials => p.materials.clone_from(&form.materials),
            // Photos come with the form's file; batches are made by the batch builder.
            Param::Photos | Param::Batch | Param::Carrier => {}
        }
    }
    Ok(Action::from_params(kind, p)?)
}

/// `POST /console/records/{id}/act`: one workflow action, with an optional evidence photo.
pub async fn act(State(state): State<AppState>, session: Session, Path(id): Path<String>, mp: Multipart) -> PageResult<Response> {
    let result = async {
        let form = read_act_form(mp).await?;
        session.check_csrf(field(&form, "_csrf"))?;
        let mut action = action_of(&state, &form)?;
        let note: String = field(&form, "note").to_owned();
        if note.chars().count() > 2000 {
            return Err(AppError::BadRequest("说明不能超过 2000 字".into()));
        }
        let photo = match &form.photo {
            Some(bytes) => Some(gridlink_core::photo::prepare(bytes).map_err(|e| AppError::BadRequest(e.to_string()))?),
            None => None,
        };
        let shas: Vec<String> = photo.iter().map(|p| p.sha256.clone()).collect();
        if let Action::Handle { photos } | Action::SelfResolve { photos } = &mut action {
            photos.clone_from(&shas);
        }
        // The photo goes to disk (and is synced) before the write: the writer only records it.
        let landed = match photo {
            Some(p) => {
                let (st, len) = (state.clone(), p.jpeg.len());
                let write = move || crate::attachments::land_whole(&st, &p.sha256, &p.jpeg).map(|()| (p.sha256, len));
                Some(tokio::task::spawn_blocking(write).await.map_err(|e| AppError::Internal(format!("photo write: {e}")))??)
            }
            None => None,
        };
        let (doc_id, s) = (id.clone(), session.clone());
        let kind = action.kind();
        let visible_after = write_as(&state, move |tx, ctx, st| {
            if let Some((sha, len)) = &landed {
                crate::attachments::record_complete(tx, sha, *len, &s.person().id, ctx.now_ms)?;
            }
            let action = match action {
                Action::Supervise { overdue, .. } => {
                    let record = load_doc(tx, &doc_id, &st.server_actor)?.ok_or(AppError::NotFound)?.read()?;
                    let holder = record.fold().state.holder;
                    Action::Supervise { overdue, to_units: holder.into_iter().collect() }
                }
                a => a,
            };
            let record = act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), &doc_id, action, &note, &shas)?;
            let visible = access(s.person(), &scope_of(&record, &record.fold().state)) != Access::None;
            let list = if record.kind() == gridlink_core::RecordKind::Incident { "/console/inbox" } else { "/console/service-requests" };
            Ok((visible, record.display_no().to_owned(), list))
        })
        .await?;
        Ok((kind, visible_after.0, visible_after.1, visible_after.2))
    }
    .await;
    match result {
        Ok((kind, true, _, _)) => Ok(Redirect::to(&format!("/console/records/{id}?done={}", kind.as_str())).into_response()),
        // Handed on out of my scope (a department finishing an errand): back to my list.
        Ok((kind, false, no, list)) => {
            let query = serde_urlencoded::to_string([("done", kind.as_str()), ("no", no.as_str())]).expect("plain pairs");
            Ok(Redirect::to(&format!("{list}?{query}")).into_response())
        }
        Err(e @ (AppError::NotFound | AppError::Internal(_))) => Err(e.into()),
        Err(e) => {
            // Show the record again with the reason; nothing was changed.
            let status = e.clone_status();
            let page = state.db.read(record_page(&state, &session, id, None, Some(e.to_string()))).await?;
            Ok((status, html(&page)).into_response())
        }
    }
}
