//! Service requests (便民服务事项) at the stations: taking one, the hand-off batch to the town
//! and its manifest.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use gridlink_core::calendar::local_time;
use gridlink_core::figures::Table;
use gridlink_core::{Action, NewServiceRequest, ServiceMode, Status, UnitCode, service_request_body};
use serde::Deserialize;

use crate::app::AppState;
use crate::console::views::{Chrome, ListSpec, Names, RowView};
use crate::console::{CsrfForm, PageResult, Session, html};
use crate::error::{AppError, AppResult};
use crate::linkage::records_where;
use crate::records::{act_as, create_as, keep_personal};
use crate::storage::{ListOrder, RecordFilter};

use super::record::RecordQuery;
use super::*;

#[derive(Template)]
#[template(path = "service_request_new.html")]
struct NewServiceRequestPage {
    chrome: Chrome,
    items: Vec<(String, String)>,
    item: Option<ItemView>,
    error: Option<String>,
}

#[derive(Debug, Clone)]
struct ItemView {
    code: String,
    name: String,
    modes: Vec<(&'static str, &'static str)>,
    materials: Vec<String>,
    promised_days: u32,
    fee: String,
}

#[derive(Debug, Deserialize)]
pub struct ItemQuery {
    item: Option<String>,
}

async fn new_service_request_page(
    state: &AppState,
    session: &Session,
    item: Option<&str>,
    error: Option<String>,
) -> AppResult<NewServiceRequestPage> {
    let item = item.map(str::to_owned);
    read_page(state, session, move |_, names, state, session| new_service_request_view(state, session, names, item.as_deref(), error)).await
}

fn new_service_request_view(
    state: &AppState,
    session: &Session,
    names: &Names<'_>,
    item: Option<&str>,
    error: Option<String>,
) -> AppResult<NewServiceRequestPage> {
    let items = state.catalog.service_items.iter().map(|i| (i.code.clone(), format!("{} {}", i.code, i.name))).collect();
    let item = item.and_then(|c| state.catalog.service_item(c).ok()).map(|i| ItemView {
        code: i.code.clone(),
        name: i.name.clone(),
        modes: i.modes.iter().map(|m| (m.as_str(), m.label())).collect(),
        materials: i.materials.clone(),
        promised_days: i.promised_days,
        fee: i.fee.clone(),
    });
    Ok(NewServiceRequestPage { chrome: chrome(session, names, "新建代办", "/console/service-requests/new", false), items, item, error })
}

/// `GET /console/service-requests/new?item=`: the intake form, its checklist from the service-item catalog.
pub async fn new_service_request_form(State(state): State<AppState>, session: Session, Query(q): Query<ItemQuery>) -> PageResult<Response> {
    Ok(html(&new_service_request_page(&state, &session, q.item.as_deref(), None).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewServiceRequestForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    item: String,
    mode: String,
    resident_name: String,
    #[serde(default)]
    resident_id_number: String,
    #[serde(default)]
    resident_phone: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    materials: Vec<String>,
}

/// `POST /console/service-requests/new`: takes the request (受理) as the station would on its phone.
pub async fn new_service_request(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<NewServiceRequestForm>,
) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let result = async {
        let mode = ServiceMode::parse(&f.mode).ok_or_else(|| AppError::BadRequest("请选择办理方式".into()))?;
        let new = NewServiceRequest {
            item: f.item.clone(),
            mode,
            station: None,
            resident_name: f.resident_name.clone(),
            resident_id_number: opt(&f.resident_id_number),
            resident_phone: opt(&f.resident_phone),
            materials_received: f.materials.clone(),
            description: f.description.clone(),
        };
        let (body, action, personal) = service_request_body(&state.catalog, &state.calendar, &session.person().unit, new, state.now_ms())?;
        let s = session.clone();
        write_as(&state, move |tx, ctx, st| {
            let id = create_as(tx, ctx, &s.auth.device_id, s.person(), body, action)?;
            keep_personal(tx, st, s.person(), &id, &personal, ctx.now_ms)?;
            Ok(id)
        })
        .await
    }
    .await;
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/console/records/{id}?done=receive")).into_response()),
        Err(e) => {
            let status = e.clone_status();
            Ok((status, html(&new_service_request_page(&state, &session, Some(&f.item), Some(e.to_string())).await?)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "batch_new.html")]
struct BatchPage {
    chrome: Chrome,
    rows: Vec<RowView>,
    pager: Pager,
    targets: Vec<(String, String)>,
    carrier: String,
    error: Option<String>,
}

/// The station's queued errands, oldest first: what the next batch carries.
pub(super) const QUEUED: ListSpec<'static> = ListSpec {
    filter: RecordFilter { kind: Some("service_request"), status: Some("queued"), held_by_viewer: true, ..RecordFilter::ALL },
    order: ListOrder::Created,
};

async fn batch_page(state: &AppState, session: &Session, page: usize, error: Option<String>) -> AppResult<BatchPage> {
    read_page(state, session, move |conn, names, state, session| batch_view(conn, names, state, session, page, error)).await
}

fn batch_view(
    conn: &dyn Storage,
    names: &Names<'_>,
    state: &AppState,
    session: &Session,
    page: usize,
    error: Option<String>,
) -> AppResult<BatchPage> {
    let list = QUEUED.page(conn, names, session.person(), page, state.now_ms())?;
    let pager = Pager::new(&list, "/console/service-requests/batch?");
    // The town's service center first: it is where errands usually go.
    let mut targets = names.departments();
    let service_centers: Vec<String> =
        conn.units()?.into_iter().filter(|u| u.department_key.as_deref() == Some("bianmin")).map(|u| u.code).collect();
    targets.sort_by_key(|(code, _)| !service_centers.contains(code));
    Ok(BatchPage {
        chrome: chrome(session, names, "批次移交", "/console/service-requests/batch", true),
        rows: list.rows,
        pager,
        targets,
        carrier: session.person().name.clone(),
        error,
    })
}

/// `GET /console/service-requests/batch`: the hand-off builder — queued errands to carry to the town.
pub async fn batch_form(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    Ok(html(&batch_page(&state, &session, page_number(q.page.as_deref()), None).await?))
}

#[derive(Debug, Deserialize)]
pub struct BatchForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    ids: Vec<String>,
    to_unit: String,
    carrier: String,
}

/// `POST /console/service-requests/batch`: hands the chosen errands off in one batch, all or none.
pub async fn batch_create(State(state): State<AppState>, session: Session, Form(f): Form<BatchForm>) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let result = async {
        if f.ids.is_empty() || f.ids.len() > 500 {
            return Err(AppError::BadRequest("请至少选择一件待代办事项".into()));
        }
        let carrier = f.carrier.trim().chars().take(50).collect::<String>();
        if carrier.is_empty() {
            return Err(AppError::BadRequest("请填写送件人".into()));
        }
        let to_unit = UnitCode::parse(&f.to_unit).map_err(|_| AppError::BadRequest("请选择接收单位".into()))?;
        let now = local_time(state.now_ms());
        let village = session.person().unit.as_str().get(9..12).unwrap_or("000").to_owned();
        let batch_id = format!("PC{}-{village}-{:04X}", now.format("%Y%m%d"), rand::random::<u16>());
        let (s, ids, bid) = (session.clone(), f.ids.clone(), batch_id.clone());
        write_as(&state, move |tx, ctx, st| {
            for id in &ids {
                let action = Action::HandOff { to_unit: to_unit.clone(), batch_id: bid.clone(), carrier: carrier.clone() };
                act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), id, action, "", &[])?;
            }
            Ok(())
        })
        .await?;
        Ok(batch_id)
    }
    .await;
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/console/batches/{id}")).into_response()),
        Err(AppError::Internal(d)) => Err(AppError::Internal(d).into()),
        Err(e) => Ok((e.clone_status(), html(&batch_page(&state, &session, 1, Some(e.to_string())).await?)).into_response()),
    }
}

#[derive(Template)]
#[template(path = "manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    batch_id: String,
    table: Table,
    to_receive: usize,
    done: Option<String>,
}

/// `GET /console/batches/{id}`: the printable manifest (交接清单) of a hand-off batch.
pub async fn batch(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<RecordQuery>,
) -> PageResult<Response> {
    let page = read_page(&state, &session, move |c, names, st, s| {
        let records = records_where(c, st, s.person(), &RecordFilter { batch_id: Some(&id), ..RecordFilter::ALL })?;
        if records.is_empty() {
            return Err(AppError::NotFound);
        }
        let to_receive = records
            .iter()
            .filter(|(_, f)| f.state.status == Some(Status::HandedOff) && f.state.holder.as_ref() == Some(&s.person().unit))
            .count();
        let table = gridlink_core::figures::manifest(&id, &records, &st.catalog);
        let done = q.done.map(|n| format!("已整批签收 {n} 件"));
        Ok(ManifestPage { chrome: chrome(s, names, "交接清单", "", true), batch_id: id, table, to_receive, done })
    })
    .await?;
    Ok(html(&page))
}

/// `POST /console/batches/{id}/receive`: the town signs for every errand of the batch it holds.
pub async fn batch_receive(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult<Response> {
    session.check_csrf(&f.csrf)?;
    let (s, bid) = (session.clone(), id.clone());
    let n = write_as(&state, move |tx, ctx, st| {
        // Held by my unit, so in my scope.
        let handed = RecordFilter { batch_id: Some(&bid), status: Some("handed_off"), held_by_viewer: true, ..RecordFilter::ALL };
        let person = s.person();
        let ids: Vec<String> = tx
            .list_records(&handed, ListOrder::Created, person.unit.as_str(), &person.id, i64::MAX, 0)?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut n = 0;
        for doc_id in &ids {
            act_as(tx, ctx, &st.calendar, &s.auth.device_id, s.person(), doc_id, Action::AcceptHandOff, "整批签收", &[])?;
            n += 1;
        }
        Ok(n)
    })
    .await?;
    Ok(Redirect::to(&format!("/console/batches/{id}?done={n}")).into_response())
}
