//! The administrator's pages (系统管理): people, devices, org units and grid boundaries, routing
//! rules, the catalog, imports by upload and the audit log.
//!
//! Only the administrator may open them (others get 403). Every change is one write that also
//! appends its audit row, every form carries the session's CSRF token, and a form with bad input
//! is shown again with the reason and changes nothing. After a change the page is reloaded by a
//! redirect with a `done` code, so a refresh does not repeat it.

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::Form;
use gridlink_core::routing::RoutingRules;
use gridlink_core::workflow::role_fits_unit;
use gridlink_core::{Catalog, Role, UnitCode, UnitKind};
use serde::Deserialize;

use super::{Pager, Tab, chrome, page_number, read_page};
use crate::app::AppState;
use crate::console::views::{Chrome, Names, RowsPage};
use crate::console::{PageError, PageResult, Session, html};
use crate::error::{AppError, AppResult};
use crate::import;
use crate::storage::{AuditFilter, Storage};

/// Rows per page of the admin lists.
const PAGE: usize = 50;

/// The admin pages, in the order of their tabs.
const TABS: &[(&str, &str)] = &[
    ("people", "人员"),
    ("devices", "设备"),
    ("units", "组织与网格"),
    ("routing", "分流规则"),
    ("catalog", "事项目录"),
    ("import", "批量导入"),
    ("audit", "审计日志"),
];

/// What a finished change says on the reloaded page.
fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "已新建账号。",
        "updated" => "已修改账号的角色和单位。",
        "deactivated" => "已停用账号,其所有设备已无法登录和同步。",
        "activated" => "已启用账号。",
        "password" => "已重置密码,请将新密码当面告知本人。",
        "revoked" => "已停用设备:该设备下次联网时会清除本地数据。",
        "unit" => "已保存单位。",
        "boundary" => "已保存网格边界。",
        "routing" => "已保存分流规则,下一件上报即按新规则分流。",
        "catalog" => "已导入事项目录;时限等在重启服务后生效。",
        _ => return None,
    })
}

fn refuse_non_admin(session: &Session) -> Result<(), PageError> {
    if session.person().role == Role::Admin { Ok(()) } else { Err(PageError(AppError::Forbidden)) }
}

/// The head every admin page shares: the console chrome, the admin tabs, what was just done and
/// what was wrong with the last form.
#[derive(Debug, Clone)]
pub struct AdminHead {
    pub chrome: Chrome,
    pub tabs: Vec<Tab>,
    pub done: Option<&'static str>,
    pub error: Option<String>,
}

fn head(session: &Session, names: &Names<'_>, active: &str, done: Option<&str>, error: Option<String>) -> AdminHead {
    let title = TABS.iter().find(|(k, _)| *k == active).map_or("系统管理", |(_, l)| l);
    AdminHead {
        chrome: chrome(session, names, &format!("系统管理 · {title}"), "/console/admin", false),
        tabs: TABS.iter().map(|(k, l)| Tab { href: format!("/console/admin/{k}"), label: l, active: *k == active }).collect(),
        done: done.and_then(done_text),
        error,
    }
}

/// A page of `total` rows, `page` asked for (past the end: the last page).
fn rows_page(total: usize, page: usize) -> RowsPage {
    let pages = total.div_ceil(PAGE).max(1);
    RowsPage { page: page.clamp(1, pages), pages, total, rows: Vec::new() }
}

fn offset(p: &RowsPage) -> i64 {
    ((p.page - 1) * PAGE) as i64
}

/// A value percent-encoded for a query string we build ourselves.
fn query_value(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError::Unprocessable(msg.into())
}

/// Shows a page again with the form's error (422), or passes on other failures.
fn again(e: AppError, page: Response) -> PageResult<Response> {
    match e {
        AppError::Unprocessable(_) | AppError::BadRequest(_) | AppError::Conflict(_) | AppError::NotFound => {
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        other => Err(PageError(other)),
    }
}

pub async fn index(session: Session) -> PageResult<Redirect> {
    refuse_non_admin(&session)?;
    Ok(Redirect::to("/console/admin/people"))
}

// ---------------------------------------------------------------- people

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    page: Option<String>,
    done: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PersonRow {
    id: String,
    name: String,
    role: Role,
    role_label: &'static str,
    unit: String,
    unit_name: String,
    active: bool,
    devices: i64,
}

#[derive(Template)]
#[template(path = "admin_people.html")]
struct PeoplePage {
    head: AdminHead,
    chrome: Chrome,
    q: String,
    rows: Vec<PersonRow>,
    pager: Pager,
    roles: Vec<(&'static str, &'static str)>,
    units: Vec<(String, String)>,
}

fn roles() -> Vec<(&'static str, &'static str)> {
    Role::ALL.iter().filter(|r| **r != Role::System).map(|r| (r.as_str(), r.label())).collect()
}

fn unit_choices(c: &dyn Storage) -> AppResult<Vec<(String, String)>> {
    let mut units = import::load_units(c).map_err(AppError::Internal)?;
    units.sort_by(|a, b| a.code.as_str().cmp(b.code.as_str()));
    Ok(units.into_iter().map(|u| (u.code.to_string(), format!("{} {}", u.code, u.name))).collect())
}

fn people_page(state: &AppState, session: &Session, q: ListQuery, error: Option<String>) -> impl Future<Output = AppResult<Response>> {
    let (state, session) = (state.clone(), session.clone());
    async move {
        read_page(&state, &session, move |c, names, _, s| {
            let needle = q.q.clone().unwrap_or_default().trim().chars().take(40).collect::<String>();
            let p = rows_page(c.people_count(&needle)? as usize, page_number(q.page.as_deref()));
            let rows = c
                .people_page(&needle, PAGE as i64, offset(&p))?
                .into_iter()
                .filter_map(|l| {
                    let role = crate::auth::parse_role(&l.role)?;
                    Some(PersonRow {
                        id: l.id,
                        name: l.name,
                        role,
                        role_label: role.label(),
                        unit_name: names.unit(&l.unit),
                        unit: l.unit,
                        active: l.active,
                        devices: l.devices,
                    })
                })
                .collect();
            let head = head(s, names, "people", q.done.as_deref(), error);
            let base = format!("/console/admin/people?q={}&", query_value(&needle));
            Ok(html(&PeoplePage {
                chrome: head.chrome.clone(),
                head,
                q: needle,
                rows,
                pager: Pager::new(&p, &base),
                roles: roles(),
                units: unit_choices(c)?,
            }))
        })
        .await
    }
}

pub async fn people(State(state): State<AppState>, session: Session, Query(q): Query<ListQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(people_page(&state, &session, q, None).await?)
}

#[derive(Debug, Deserialize)]
pub struct NewPersonForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    id: String,
    name: String,
    role: String,
    unit: String,
    password: String,
}

/// Checks a role for a unit that exists.
fn checked_role_unit(c: &dyn Storage, role: &str, unit: &str) -> AppResult<(Role, UnitCode)> {
    let role = crate::auth::parse_role(role).filter(|r| *r != Role::System).ok_or_else(|| bad("请选择角色"))?;
    let unit = UnitCode::parse(unit.trim()).map_err(|_| bad("请选择单位"))?;
    if c.unit(unit.as_str())?.is_none() {
        return Err(bad(format!("单位 {unit} 不存在")));
    }
    if !role_fits_unit(role, &unit) {
        return Err(bad(format!("{}不能隶属于单位 {unit}", role.label())));
    }
    Ok((role, unit))
}

fn checked_password(p: &str) -> AppResult<()> {
    let n = p.chars().count();
    if !(8..=128).contains(&n) { Err(bad("密码须为 8 到 128 位")) } else { Ok(()) }
}

pub async fn create_person(State(state): State<AppState>, session: Session, Form(f): Form<NewPersonForm>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    let result = async {
        let id = f.id.trim().to_owned();
        let name = f.name.trim().to_owned();
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(bad("账号只能包含字母、数字和 - _ .(最长 64 位)"));
        }
        if name.is_empty() || name.chars().count() > 50 {
            return Err(bad("姓名不能为空(最长 50 字)"));
        }
        checked_password(&f.password)?;
        let hash = tokio::task::spawn_blocking({
            let p = f.password.clone();
            move || crate::auth::hash_password(&p)
        })
        .await?;
        let (role, unit) = (f.role.clone(), f.unit.clone());
        state
            .db
            .write(move |c| {
                let (role, unit) = checked_role_unit(c, &role, &unit)?;
                if c.person_exists(&id)? {
                    return Err(bad(format!("账号 {id} 已存在")));
                }
                let account = crate::storage::PersonRow {
                    id: id.clone(),
                    name,
                    role: role.as_str().to_owned(),
                    unit: unit.to_string(),
                    password_hash: hash,
                    active: true,
                };
                c.put_person(&account, now)?;
                c.audit(now, &who, "create_person", &format!("{id} {} {unit}", role.label()))
            })
            .await
    }
    .await;
    match result {
        Ok(()) => Ok(Redirect::to("/console/admin/people?done=created").into_response()),
        Err(e) => {
            let msg = e.to_string();
            again(e, people_page(&state, &session, ListQuery::default(), Some(msg)).await?)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PersonForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    /// `update` (role and unit), `deactivate`, `activate` or `password`.
    op: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    password: String,
}

pub async fn change_person(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<PersonForm>,
) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    let result = async {
        let hash = if f.op == "password" {
            checked_password(&f.password)?;
            let p = f.password.clone();
            Some(tokio::task::spawn_blocking(move || crate::auth::hash_password(&p)).await?)
        } else {
            None
        };
        let (op, role, unit, pid) = (f.op.clone(), f.role.clone(), f.unit.clone(), id.clone());
        state
            .db
            .write(move |c| {
                if !c.person_exists(&pid)? {
                    return Err(AppError::NotFound);
                }
                if pid == who && op == "deactivate" {
                    return Err(bad("不能停用自己的账号"));
                }
                let detail = match op.as_str() {
                    "update" => {
                        let (role, unit) = checked_role_unit(c, &role, &unit)?;
                        c.set_person_role_unit(&pid, role.as_str(), unit.as_str())?;
                        // Sessions carry the old role and unit: they end, the person signs in again.
                        c.end_sessions(&pid)?;
                        format!("{pid} → {} {unit}", role.label())
                    }
                    "deactivate" => {
                        c.set_person_active(&pid, false)?;
                        pid.clone()
                    }
                    "activate" => {
                        c.set_person_active(&pid, true)?;
                        pid.clone()
                    }
                    "password" => {
                        c.set_password(&pid, hash.as_deref().ok_or_else(|| bad("请输入新密码"))?)?;
                        c.end_sessions(&pid)?;
                        pid.clone()
                    }
                    _ => return Err(bad("未知的操作")),
                };
                let action = match op.as_str() {
                    "update" => "change_person",
                    "deactivate" => "deactivate_person",
                    "activate" => "activate_person",
                    _ => "reset_password",
                };
                c.audit(now, &who, action, &detail)?;
                Ok(op)
            })
            .await
    }
    .await;
    match result {
        Ok(op) => {
            let done = match op.as_str() {
                "update" => "updated",
                "deactivate" => "deactivated",
                "activate" => "activated",
                _ => "password",
            };
            Ok(Redirect::to(&format!("/console/admin/people?q={}&done={done}", query_value(&id))).into_response())
        }
        Err(e) => {
            let msg = e.to_string();
            let q = ListQuery { q: Some(id), ..Default::default() };
            again(e, people_page(&state, &session, q, Some(msg)).await?)
        }
    }
}

// ---------------------------------------------------------------- devices

#[derive(Debug, Clone)]
pub struct DeviceRow {
    id: String,
    person: String,
    person_name: String,
    name: String,
    created: String,
    last_seen: String,
    state: &'static str,
    revocable: bool,
}

#[derive(Template)]
#[template(path = "admin_devices.html")]
struct DevicesPage {
    head: AdminHead,
    chrome: Chrome,
    q: String,
    rows: Vec<DeviceRow>,
    pager: Pager,
}

fn time_text(ms: Option<i64>) -> String {
    ms.map(|ms| gridlink_core::calendar::local_time(ms).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "—".into())
}

pub async fn devices(State(state): State<AppState>, session: Session, Query(q): Query<ListQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    let now = state.now_ms();
    Ok(read_page(&state, &session, move |c, names, _, s| {
        let person = q.q.clone().unwrap_or_default().trim().chars().take(64).collect::<String>();
        let p = rows_page(c.devices_count(&person)? as usize, page_number(q.page.as_deref()));
        let rows = c
            .devices_page(&person, PAGE as i64, offset(&p))?
            .into_iter()
            .map(|d| {
                let state = match (d.revoked_ms, d.logged_out, d.expires_ms < now) {
                    (Some(_), _, _) => "已停用(远程清除)",
                    (None, true, _) => "已退出",
                    (None, false, true) => "登录已过期",
                    _ => "使用中",
                };
                DeviceRow {
                    id: d.id,
                    person: d.person_id,
                    person_name: d.person_name,
                    name: d.name,
                    created: time_text(Some(d.created_ms)),
                    last_seen: time_text(d.last_seen_ms),
                    state,
                    revocable: d.revoked_ms.is_none(),
                }
            })
            .collect();
        let head = head(s, names, "devices", q.done.as_deref(), None);
        let base = format!("/console/admin/devices?q={}&", query_value(&person));
        Ok(html(&DevicesPage { chrome: head.chrome.clone(), head, q: person, rows, pager: Pager::new(&p, &base) }))
    })
    .await?)
}

pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<crate::console::CsrfForm>,
) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    crate::app::revoke(&state, &session.person().id, id).await?;
    Ok(Redirect::to("/console/admin/devices?done=revoked").into_response())
}

// ---------------------------------------------------------------- units and grid boundaries

#[derive(Debug, Clone)]
pub struct UnitRow {
    code: String,
    name: String,
    kind: &'static str,
    parent: String,
    department_key: String,
    is_grid: bool,
    boundary: String,
}

#[derive(Template)]
#[template(path = "admin_units.html")]
struct UnitsPage {
    head: AdminHead,
    chrome: Chrome,
    q: String,
    rows: Vec<UnitRow>,
    pager: Pager,
    kinds: Vec<&'static str>,
}

fn units_page(state: &AppState, session: &Session, q: ListQuery, error: Option<String>) -> impl Future<Output = AppResult<Response>> {
    let (state, session) = (state.clone(), session.clone());
    async move {
        read_page(&state, &session, move |c, names, _, s| {
            let prefix = q.q.clone().unwrap_or_default().trim().chars().take(20).collect::<String>();
            let p = rows_page(c.units_count(&prefix)? as usize, page_number(q.page.as_deref()));
            let rows = c
                .units_page(&prefix, PAGE as i64, offset(&p))?
                .into_iter()
                .map(|u| {
                    let kind = import::parse_kind(&u.kind);
                    UnitRow {
                        code: u.code,
                        name: u.name,
                        kind: kind.map_or("?", UnitKind::label),
                        parent: u.parent.unwrap_or_default(),
                        department_key: u.department_key.unwrap_or_default(),
                        is_grid: kind == Some(UnitKind::Grid),
                        boundary: u.boundary.unwrap_or_default(),
                    }
                })
                .collect();
            let head = head(s, names, "units", q.done.as_deref(), error);
            let base = format!("/console/admin/units?q={}&", query_value(&prefix));
            let kinds = [UnitKind::County, UnitKind::Town, UnitKind::Village, UnitKind::Group, UnitKind::Grid, UnitKind::Department]
                .map(UnitKind::label)
                .to_vec();
            Ok(html(&UnitsPage { chrome: head.chrome.clone(), head, q: prefix, rows, pager: Pager::new(&p, &base), kinds }))
        })
        .await
    }
}

pub async fn units(State(state): State<AppState>, session: Session, Query(q): Query<ListQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(units_page(&state, &session, q, None).await?)
}

#[derive(Debug, Deserialize)]
pub struct UnitForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    code: String,
    name: String,
    kind: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    department_key: String,
}

pub async fn save_unit(State(state): State<AppState>, session: Session, Form(f): Form<UnitForm>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    // The same checks as an import of one row: the code, the kind, a tree that still fits.
    let csv = {
        let mut w = csv::Writer::from_writer(Vec::new());
        let row = [&f.code, &f.name, &f.kind, &f.parent, &f.department_key].map(|s| s.trim().to_owned());
        w.write_record(["code", "name", "kind", "parent", "department_key"]).and_then(|()| w.write_record(&row)).expect("to memory");
        String::from_utf8(w.into_inner().expect("to memory")).expect("utf-8 in, utf-8 out")
    };
    let code = f.code.trim().to_owned();
    let result = state
        .db
        .write(move |c| {
            let units = import::parse_units(&csv).map_err(|e| bad(e.replace("导入失败,未导入任何数据:\n", "")))?;
            import::insert_units(c, &units).map_err(|e| bad(e.replace("导入失败,未导入任何数据:\n", "")))?;
            c.audit(now, &who, "save_unit", &code)
        })
        .await;
    match result {
        Ok(()) => Ok(Redirect::to("/console/admin/units?done=unit").into_response()),
        Err(e) => {
            let msg = e.to_string();
            again(e, units_page(&state, &session, ListQuery::default(), Some(msg)).await?)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct BoundaryForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    boundary: String,
}

/// A grid's boundary: a JSON array of at least three `[longitude, latitude]` points in China's
/// range, or nothing (the map then shows no outline).
pub fn parse_boundary(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let points: Vec<[f64; 2]> = serde_json::from_str(text).map_err(|_| "网格边界应为 [[经度, 纬度], …] 形式的坐标列表".to_owned())?;
    if points.len() < 3 {
        return Err("网格边界至少需要 3 个点".into());
    }
    if let Some((i, _)) = points.iter().enumerate().find(|(_, [lng, lat])| !(73.0..=136.0).contains(lng) || !(3.0..=54.0).contains(lat)) {
        return Err(format!("第 {} 个点不在中国境内的经纬度范围(经度 73–136,纬度 3–54)", i + 1));
    }
    Ok(Some(serde_json::to_string(&points).expect("numbers serialise")))
}

pub async fn save_boundary(
    State(state): State<AppState>,
    session: Session,
    Path(code): Path<String>,
    Form(f): Form<BoundaryForm>,
) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    let unit = code.clone();
    let result = state
        .db
        .write(move |c| {
            let boundary = parse_boundary(&f.boundary).map_err(bad)?;
            let kind = c.unit(&unit)?.map(|u| u.kind);
            if kind.and_then(|k| import::parse_kind(&k)) != Some(UnitKind::Grid) {
                return Err(bad(format!("{unit} 不是网格")));
            }
            c.set_boundary(&unit, boundary.as_deref())?;
            c.audit(now, &who, "set_boundary", &unit)
        })
        .await;
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/console/admin/units?q={}&done=boundary", query_value(&code))).into_response()),
        Err(e) => {
            let msg = e.to_string();
            let q = ListQuery { q: Some(code), ..Default::default() };
            again(e, units_page(&state, &session, q, Some(msg)).await?)
        }
    }
}

// ---------------------------------------------------------------- routing rules

#[derive(Debug, Clone)]
pub struct RuleRow {
    category: String,
    category_name: String,
    village: String,
    to: &'static str,
}

#[derive(Template)]
#[template(path = "admin_routing.html")]
struct RoutingPage {
    head: AdminHead,
    chrome: Chrome,
    rules: Vec<RuleRow>,
    text: String,
    /// The trial: a category at a place, and where a report of it would go now.
    try_category: String,
    try_unit: String,
    outcome: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RoutingQuery {
    done: Option<String>,
    category: Option<String>,
    unit: Option<String>,
}

fn routing_page(
    state: &AppState,
    session: &Session,
    q: RoutingQuery,
    text: Option<String>,
    error: Option<String>,
) -> impl Future<Output = AppResult<Response>> {
    let (state, session) = (state.clone(), session.clone());
    async move {
        read_page(&state, &session, move |_, names, st, s| {
            let current = st.routing();
            let category_name =
                |code: &str| st.catalog.minors().find(|m| m.code.starts_with(code)).map(|m| m.name.clone()).unwrap_or_else(|| "?".into());
            let rules = current
                .rules
                .iter()
                .map(|r| RuleRow {
                    category: r.category.clone(),
                    category_name: category_name(&r.category),
                    village: r.village.as_ref().map_or_else(|| "全镇".into(), |v| names.unit(v.as_str())),
                    to: r.to.label(),
                })
                .collect();
            let (try_category, try_unit) = (q.category.unwrap_or_default(), q.unit.unwrap_or_default());
            let outcome = (!try_category.is_empty()).then(|| {
                let place = UnitCode::parse(try_unit.trim()).map_err(|_| "地点应为网格、组或村(社区)的代码".to_owned());
                match place.and_then(|p| current.target(&st.catalog, try_category.trim(), &p).map_err(|e| e.to_string())) {
                    Ok(t) => format!("现在上报的“{}”将分流到:{}", category_name(try_category.trim()), names.unit(t.as_str())),
                    Err(e) => format!("无法试算:{e}"),
                }
            });
            let head = head(s, names, "routing", q.done.as_deref(), error);
            let text = text.unwrap_or_else(|| serde_json::to_string_pretty(&current).expect("serialisable"));
            Ok(html(&RoutingPage { chrome: head.chrome.clone(), head, rules, text, try_category, try_unit, outcome }))
        })
        .await
    }
}

pub async fn routing(State(state): State<AppState>, session: Session, Query(q): Query<RoutingQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(routing_page(&state, &session, q, None, None).await?)
}

#[derive(Debug, Deserialize)]
pub struct RoutingForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    rules: String,
}

pub async fn save_routing(State(state): State<AppState>, session: Session, Form(f): Form<RoutingForm>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    session.check_csrf(&f.csrf)?;
    let parsed = serde_json::from_str::<RoutingRules>(&f.rules)
        .map_err(|e| bad(format!("分流规则格式不正确:第 {} 行第 {} 列附近", e.line(), e.column())));
    let result = match parsed {
        Ok(rules) => crate::linkage::set_routing(&state, &session.person().id, rules).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/console/admin/routing?done=routing").into_response()),
        Err(e) => {
            let msg = e.to_string();
            again(e, routing_page(&state, &session, RoutingQuery::default(), Some(f.rules), Some(msg)).await?)
        }
    }
}

// ---------------------------------------------------------------- catalog

#[derive(Debug, Clone)]
pub struct CategoryRow {
    code: String,
    name: String,
    level: &'static str,
    department: String,
    time_limit: String,
}

#[derive(Debug, Clone)]
pub struct ItemRow {
    code: String,
    name: String,
    level: &'static str,
    promised_days: u32,
    materials: usize,
    fee: String,
}

#[derive(Template)]
#[template(path = "admin_catalog.html")]
struct CatalogPage {
    head: AdminHead,
    chrome: Chrome,
    categories: Vec<CategoryRow>,
    items: Vec<ItemRow>,
}

fn catalog_page(
    state: &AppState,
    session: &Session,
    done: Option<String>,
    error: Option<String>,
) -> impl Future<Output = AppResult<Response>> {
    let (state, session) = (state.clone(), session.clone());
    async move {
        read_page(&state, &session, move |c, names, st, s| {
            // What is imported (in force after a restart), else what runs now.
            let stored = match (c.meta_get("catalog.categories")?, c.meta_get("catalog.items")?) {
                (Some(cat), Some(items)) => Catalog::from_json(&cat, &items).ok(),
                _ => None,
            };
            let catalog = stored.as_ref().unwrap_or(&st.catalog);
            let dept = |key: &str| catalog.departments.iter().find(|d| d.key == key).map_or_else(|| key.to_owned(), |d| d.name.clone());
            let categories = catalog
                .minors()
                .map(|m| CategoryRow {
                    code: m.code.clone(),
                    name: m.name.clone(),
                    level: m.level.label(),
                    department: dept(&m.department),
                    time_limit: m.time_limit.label(),
                })
                .collect();
            let items = catalog
                .service_items
                .iter()
                .map(|i| ItemRow {
                    code: i.code.clone(),
                    name: i.name.clone(),
                    level: i.level.label(),
                    promised_days: i.promised_days,
                    materials: i.materials.len(),
                    fee: i.fee.clone(),
                })
                .collect();
            let head = head(s, names, "catalog", done.as_deref(), error);
            Ok(html(&CatalogPage { chrome: head.chrome.clone(), head, categories, items }))
        })
        .await
    }
}

pub async fn catalog(State(state): State<AppState>, session: Session, Query(q): Query<ListQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(catalog_page(&state, &session, q.done, None).await?)
}

/// Reads the text fields and files of an upload form (CSRF token first checked by the caller).
async fn read_upload(mut mp: Multipart) -> AppResult<std::collections::HashMap<String, String>> {
    let mut fields = std::collections::HashMap::new();
    while let Some(field) = mp.next_field().await.map_err(|e| AppError::BadRequest(format!("表单数据无效:{}", e.body_text())))? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| AppError::BadRequest(format!("表单数据无效:{}", e.body_text())))?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad("文件须为 UTF-8 编码的文本(CSV 或 JSON)"))?;
        // Excel saves CSV with a byte-order mark.
        fields.insert(name, text.trim_start_matches('\u{feff}').to_owned());
    }
    Ok(fields)
}

pub async fn import_catalog(State(state): State<AppState>, session: Session, mp: Multipart) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    let fields = read_upload(mp).await?;
    session.check_csrf(fields.get("_csrf").map_or("", String::as_str))?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    let (cat, items) = (fields.get("categories").cloned().unwrap_or_default(), fields.get("items").cloned().unwrap_or_default());
    let result = state
        .db
        .write(move |c| {
            let catalog = Catalog::from_json(&cat, &items).map_err(|e| bad(format!("事项目录有误,未导入:{e}")))?;
            c.meta_set("catalog.categories", &cat)?;
            c.meta_set("catalog.items", &items)?;
            c.meta_clear("index_version")?;
            c.audit(now, &who, "import_catalog", &format!("{} 个小类、{} 项服务", catalog.minors().count(), catalog.service_items.len()))
        })
        .await;
    match result {
        Ok(()) => Ok(Redirect::to("/console/admin/catalog?done=catalog").into_response()),
        Err(e) => {
            let msg = e.to_string();
            again(e, catalog_page(&state, &session, None, Some(msg)).await?)
        }
    }
}

// ---------------------------------------------------------------- import by upload

#[derive(Template)]
#[template(path = "admin_import.html")]
struct ImportPage {
    head: AdminHead,
    chrome: Chrome,
    /// The bad rows of the last upload, one per line.
    problems: Vec<String>,
    imported: Option<String>,
}

fn import_page(
    state: &AppState,
    session: &Session,
    problems: Vec<String>,
    imported: Option<String>,
) -> impl Future<Output = AppResult<Response>> {
    let (state, session) = (state.clone(), session.clone());
    async move {
        read_page(&state, &session, move |_, names, _, s| {
            let head = head(s, names, "import", None, None);
            Ok(html(&ImportPage { chrome: head.chrome.clone(), head, problems, imported }))
        })
        .await
    }
}

pub async fn import_form(State(state): State<AppState>, session: Session) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(import_page(&state, &session, Vec::new(), None).await?)
}

pub async fn import_upload(State(state): State<AppState>, session: Session, mp: Multipart) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    let fields = read_upload(mp).await?;
    session.check_csrf(fields.get("_csrf").map_or("", String::as_str))?;
    let who = session.person().id.clone();
    let now = state.now_ms();
    let what = fields.get("what").cloned().unwrap_or_default();
    let text = fields.get("file").cloned().unwrap_or_default();
    // Password hashing is slow: people are parsed and hashed before the writer is taken.
    let result: AppResult<String> = async {
        match what.as_str() {
            "units" => {
                let units = import::parse_units(&text).map_err(bad)?;
                state
                    .db
                    .write(move |c| {
                        let n = import::insert_units(c, &units).map_err(bad)?;
                        c.audit(now, &who, "import_units", &format!("{n}"))?;
                        Ok(format!("已导入 {n} 个单位"))
                    })
                    .await
            }
            "people" => {
                let people = import::parse_people(&text).map_err(bad)?;
                state
                    .db
                    .write(move |c| {
                        let n = import::insert_people(c, &people, now).map_err(bad)?;
                        c.audit(now, &who, "import_people", &format!("{n}"))?;
                        Ok(format!("已导入 {n} 名人员"))
                    })
                    .await
            }
            _ => Err(bad("请选择导入的内容(单位或人员)")),
        }
    }
    .await;
    match result {
        Ok(report) => Ok(import_page(&state, &session, Vec::new(), Some(report)).await?),
        Err(AppError::Unprocessable(msg)) => {
            let problems = msg.lines().map(str::to_owned).collect();
            Ok((StatusCode::UNPROCESSABLE_ENTITY, import_page(&state, &session, problems, None).await?).into_response())
        }
        Err(e) => Err(PageError(e)),
    }
}

// ---------------------------------------------------------------- audit log

#[derive(Debug, Clone)]
pub struct AuditRow {
    at: String,
    actor: String,
    action: String,
    detail: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    head: AdminHead,
    chrome: Chrome,
    actor: String,
    action: String,
    from: String,
    to: String,
    actions: Vec<String>,
    rows: Vec<AuditRow>,
    pager: Pager,
}

/// The start of a local day `YYYY-MM-DD` in unix ms.
fn day_start(day: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").ok()?;
    let local = date.and_hms_opt(0, 0, 0)?.and_local_timezone(gridlink_core::calendar::china_tz()).single()?;
    Some(local.timestamp_millis())
}

pub async fn audit(State(state): State<AppState>, session: Session, Query(q): Query<AuditQuery>) -> PageResult<Response> {
    refuse_non_admin(&session)?;
    Ok(read_page(&state, &session, move |c, names, _, s| {
        let clean = |v: &Option<String>, n: usize| v.clone().unwrap_or_default().trim().chars().take(n).collect::<String>();
        let (actor, action, from, to) = (clean(&q.actor, 64), clean(&q.action, 40), clean(&q.from, 10), clean(&q.to, 10));
        let from_ms = day_start(&from).unwrap_or(i64::MIN);
        let to_ms = day_start(&to).map_or(i64::MAX, |t| t + 86_400_000);
        let filter = AuditFilter { actor: actor.clone(), action: action.clone(), from_ms, to_ms };
        let page = page_number(q.page.as_deref());
        let p = rows_page(c.audit_count(&filter)? as usize, page);
        let rows = c
            .audit_page(&filter, PAGE as i64, offset(&p))?
            .into_iter()
            .map(|e| AuditRow { at: time_text(Some(e.at_ms)), actor: e.actor, action: e.action, detail: e.detail })
            .collect();
        let actions = c.audit_actions()?;
        let head = head(s, names, "audit", None, None);
        let base = format!(
            "/console/admin/audit?actor={}&action={}&from={}&to={}&",
            query_value(&actor),
            query_value(&action),
            query_value(&from),
            query_value(&to)
        );
        Ok(html(&AuditPage { chrome: head.chrome.clone(), head, actor, action, from, to, actions, rows, pager: Pager::new(&p, &base) }))
    })
    .await?)
}
