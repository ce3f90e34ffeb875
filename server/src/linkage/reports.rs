//! Reports over the records in a person's scope: outcome figures, the station ledger (台账) and
//! hand-off manifests (交接清单), as JSON, CSV or Excel.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeZone};
use gridlink_core::calendar::{china_tz, local_time};
use gridlink_core::figures::{self, RecordFacts, Table};
use gridlink_core::{Person, Record, UnitCode};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::AuthDevice;
use crate::error::{AppError, AppResult};
use crate::records::load_doc;
use crate::storage::{ListOrder, RecordFilter, Storage};

/// Period and format of a report.
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    /// First day, `YYYY-MM-DD` (default: 30 days ago).
    pub from: Option<String>,
    /// Last day, inclusive (default: today).
    pub to: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    pub format: Option<String>,
    /// For the ledger: the station's village code.
    pub station: Option<String>,
    /// For the county's figures: one of its towns only (drill-down).
    pub town: Option<String>,
}

fn day_start(d: NaiveDate) -> i64 {
    china_tz().from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")).single().expect("fixed offset").timestamp_millis()
}

pub fn period(q: &ReportQuery, now: i64) -> AppResult<(i64, i64)> {
    let parse =
        |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| AppError::BadRequest(format!("日期“{s}”格式应为 YYYY-MM-DD")));
    let today = local_time(now).date_naive();
    let to = q.to.as_deref().map(parse).transpose()?.unwrap_or(today);
    let from = q.from.as_deref().map(parse).transpose()?.unwrap_or(to - chrono::Duration::days(29));
    if from > to || (to - from).num_days() > 3660 {
        return Err(AppError::BadRequest("统计区间无效".into()));
    }
    Ok((day_start(from), day_start(to + chrono::Duration::days(1))))
}

fn unit_names(conn: &dyn Storage) -> AppResult<std::collections::HashMap<String, String>> {
    Ok(conn.units()?.into_iter().map(|u| (u.code, u.name)).collect())
}

/// Writes tables as CSV (UTF-8 with BOM, for Excel) or XLSX, or returns them as JSON.
pub fn export(tables: Vec<Table>, format: Option<&str>, name: &str, json: serde_json::Value) -> AppResult<Response> {
    match format.unwrap_or("json") {
        "json" => Ok(Json(json).into_response()),
        "csv" => {
            // Titles and blank lines between tables make rows of different lengths.
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(vec![0xEF, 0xBB, 0xBF]);
            for t in &tables {
                let row_err = |e: csv::Error| AppError::Internal(e.to_string());
                w.write_record([t.title.as_str()]).map_err(row_err)?;
                w.write_record(&t.headers).map_err(row_err)?;
                for r in &t.rows {
                    w.write_record(r.iter().map(|c| c.text())).map_err(row_err)?;
                }
                w.write_record([""]).map_err(row_err)?;
            }
            let bytes = w.into_inner().map_err(|e| AppError::Internal(e.to_string()))?;
            Ok(download(bytes, "text/csv; charset=utf-8", &format!("{name}.csv")))
        }
        "xlsx" => {
            let bytes = xlsx(&tables).map_err(|e| AppError::Internal(format!("xlsx: {e}")))?;
            Ok(download(bytes, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", &format!("{name}.xlsx")))
        }
        other => {
            Err(AppError::BadRequest(format!("不支持的导出格式“{}”,可选 json、csv、xlsx", other.chars().take(10).collect::<String>())))
        }
    }
}

fn xlsx(tables: &[Table]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    for (i, t) in tables.iter().enumerate() {
        let ws = wb.add_worksheet();
        let sheet: String = t.title.chars().filter(|c| !"[]:*?/\\".contains(*c)).take(28).collect();
        ws.set_name(format!("{}{}", i + 1, sheet))?;
        ws.write_string_with_format(0, 0, &t.title, &bold)?;
        for (c, h) in t.headers.iter().enumerate() {
            ws.write_string_with_format(1, c as u16, h, &bold)?;
            ws.set_column_width(c as u16, 14)?;
        }
        for (r, row) in t.rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                match cell {
                    figures::Cell::Number(n) => ws.write_number(r as u32 + 2, c as u16, *n)?,
                    figures::Cell::Text(s) => ws.write_string(r as u32 + 2, c as u16, s)?,
                };
            }
        }
    }
    wb.save_to_buffer()
}

fn download(bytes: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    let encoded: String = filename
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"._-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    (
        [(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, format!("attachment; filename*=UTF-8''{encoded}"))],
        bytes,
    )
        .into_response()
}

/// Facts of the records `person` may see (scope in the query).
fn facts_in_scope(conn: &dyn Storage, person: &Person) -> AppResult<Vec<RecordFacts>> {
    let rows = conn.record_facts(&RecordFilter::ALL, person.unit.as_str(), &person.id)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, facts) in rows {
        out.push(serde_json::from_str(&facts).map_err(|e| AppError::Internal(format!("facts of {id}: {e}")))?);
    }
    Ok(out)
}

/// `GET /api/v1/figures?from&to&format`: outcome figures of the records in the caller's scope.
pub async fn figures(State(state): State<AppState>, auth: AuthDevice, Query(q): Query<ReportQuery>) -> AppResult<Response> {
    let (from, to) = period(&q, state.now_ms())?;
    let st = state.clone();
    let town = q.town.clone();
    let figures = state.db.read(move |c| figures_for(c, &st, &auth.person, town.as_deref(), from, to)).await?;
    let json = serde_json::to_value(&figures).expect("serialisable");
    export(figures.tables(), q.format.as_deref(), "统计报表", json)
}

/// The town `code` names, if it lies within `person`'s unit (a county's towns, or a town's own
/// code); anything else is refused.
pub fn town_below(person: &Person, code: &str) -> AppResult<UnitCode> {
    let town = UnitCode::parse(code).ok().filter(|t| t.as_str().len() == 9 && person.unit.contains(t));
    town.ok_or_else(|| AppError::BadRequest("只能查看本单位所辖的镇".into()))
}

/// The figures of `[from, to)` over the records `person` may see, as of now; with `town`, over
/// those located in or held by that town only (the county drilling down into one of its towns).
pub fn figures_for(
    conn: &dyn Storage,
    state: &AppState,
    person: &Person,
    town: Option<&str>,
    from: i64,
    to: i64,
) -> AppResult<figures::Figures> {
    let scope = match town.filter(|t| !t.is_empty()) {
        None => person.clone(),
        Some(t) => Person { unit: town_below(person, t)?, ..person.clone() },
    };
    let facts = facts_in_scope(conn, &scope)?;
    let names = unit_names(conn)?;
    let name = |code: &str| names.get(code).cloned().unwrap_or_else(|| code.to_owned());
    let mut figures = figures::compute(&facts, &state.catalog, from, to, state.now_ms(), &name);
    if scope.unit.is_county_level() {
        figures.totals.name = "全县".into();
    }
    Ok(figures)
}

/// The records in `person`'s scope `filter` holds, read and folded, oldest first. Scope is a
/// condition of the query.
pub fn records_where(
    conn: &dyn Storage,
    state: &AppState,
    person: &Person,
    filter: &RecordFilter<'_>,
) -> AppResult<Vec<(Record, gridlink_core::Folded)>> {
    let ids: Vec<String> =
        conn.list_records(filter, ListOrder::Created, person.unit.as_str(), &person.id, i64::MAX, 0)?.into_iter().map(|r| r.id).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(doc) = load_doc(conn, &id, &state.server_actor)? {
            let record = doc.read()?;
            let folded = record.fold();
            out.push((record, folded));
        }
    }
    Ok(out)
}

/// `GET /api/v1/ledger?station&from&to&format`: a station's ledger of errands.
pub async fn ledger(State(state): State<AppState>, auth: AuthDevice, Query(q): Query<ReportQuery>) -> AppResult<Response> {
    let station_code = q
        .station
        .as_deref()
        .or(auth.person.unit.as_str().get(..12))
        .ok_or_else(|| AppError::BadRequest("请指定服务站(村/社区代码)".into()))?;
    let station = UnitCode::parse(station_code).map_err(|_| AppError::BadRequest("服务站代码格式不正确".into()))?;
    if !auth.person.unit.contains(&station) {
        return Err(AppError::Forbidden);
    }
    let (from, to) = period(&q, state.now_ms())?;
    let st = state.clone();
    let (table, count) = state
        .db
        .read(move |c| {
            let ledger = RecordFilter {
                kind: Some("service_request"),
                location: Some(station.as_str()),
                created_from: Some(from),
                created_before: Some(to),
                ..RecordFilter::ALL
            };
            let records = records_where(c, &st, &auth.person, &ledger)?;
            let names = unit_names(c)?;
            let title = format!(
                "{}便民服务站代办台账({} 至 {})",
                names.get(station.as_str()).cloned().unwrap_or_default(),
                local_time(from).format("%Y-%m-%d"),
                local_time(to - 1).format("%Y-%m-%d")
            );
            Ok((figures::ledger(&records, &st.catalog, &title), records.len()))
        })
        .await?;
    let json = serde_json::json!({ "count": count, "ledger": table });
    export(vec![table], q.format.as_deref(), "代办台账", json)
}

/// `GET /api/v1/batches/{id}?format`: the manifest of a hand-off batch.
pub async fn batch(
    State(state): State<AppState>,
    auth: AuthDevice,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> AppResult<Response> {
    let st = state.clone();
    let key = id.clone();
    let table = state
        .db
        .read(move |c| {
            let records = records_where(c, &st, &auth.person, &RecordFilter { batch_id: Some(&key), ..RecordFilter::ALL })?;
            if records.is_empty() {
                return Err(AppError::NotFound);
            }
            Ok(figures::manifest(&key, &records, &st.catalog))
        })
        .await?;
    let json = serde_json::to_value(&table).expect("serialisable");
    export(vec![table], q.format.as_deref(), &format!("交接清单-{}", id.chars().take(40).collect::<String>()), json)
}
