//! The console's pages and forms, one file per area: [`lists`], [`record`], [`map`],
//! [`stats`], [`service_requests`] and [`admin`]. What they share (the page chrome, paging, writing as the
//! signed-in person) is here.

pub mod admin;
mod lists;
mod map;
mod record;
mod service_requests;
mod stats;

use crate::storage::Storage;
use gridlink_core::workflow::ActionKind;
use serde::Deserialize;

use super::Session;
use super::views::{self, Chrome, Names, NavLink, RowView, RowsPage};
use crate::app::AppState;
use crate::error::AppResult;
use crate::records::IngestCtx;

pub use lists::{BOARD, all_lists, board, inbox, service_requests};
pub use map::map;
pub use record::{act, record};
pub use service_requests::{batch, batch_create, batch_form, batch_receive, new_service_request, new_service_request_form};
pub use stats::stats;

/// What every page does first: on a reader connection, with the unit names loaded, the state
/// and the signed-in person at hand, `f` builds the page.
async fn read_page<T: Send + 'static>(
    state: &AppState,
    session: &Session,
    f: impl FnOnce(&dyn Storage, &Names<'_>, &AppState, &Session) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let (st, s) = (state.clone(), session.clone());
    state
        .db
        .read(move |c| {
            let names = Names::load(c, &st.catalog)?;
            f(c, &names, &st, &s)
        })
        .await
}

/// Runs `f` in one write transaction with an ingest context, then tells live clients.
async fn write_as<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Storage, &mut IngestCtx<'_>, &AppState) -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let st = state.clone();
    let (out, events) = state
        .db
        .write(move |c| {
            let tx = crate::storage::Tx::savepoint(c)?;
            let routing = st.routing();
            let mut events = Vec::new();
            let out = {
                let mut ctx = st.ingest_ctx(&routing, st.now_ms(), &mut events);
                f(&*tx, &mut ctx, &st)?
            };
            tx.commit()?;
            Ok((out, events))
        })
        .await?;
    state.notify(events);
    Ok(out)
}

fn chrome(session: &Session, names: &Names<'_>, title: &str, active: &str, live: bool) -> Chrome {
    let p = session.person();
    Chrome {
        title: title.to_owned(),
        person_name: p.name.clone(),
        role: p.role.label().to_owned(),
        unit: names.unit(p.unit.as_str()),
        csrf: session.csrf.clone(),
        nav: views::nav_for(p.role).into_iter().map(|(href, label)| NavLink { href, label, active: href == active }).collect(),
        live,
    }
}

/// The row of a county's towns above a list, the map or the figures: the whole county, or one
/// town drilled into (`town=` in the page's query).
#[derive(Debug, Clone)]
pub struct TownNav {
    /// The page's URL without `town`, ending in `?` or `&`.
    pub base: String,
    /// Each town of the county: code, name, whether it is the one shown.
    pub towns: Vec<(String, String, bool)>,
    /// No town chosen: the whole county is shown.
    pub all: bool,
}

/// The town a county person asked for in `requested` (checked to lie within their unit), and
/// the row of their county's towns (`None` for anyone else: their scope is one town at most).
fn town_choice(
    c: &dyn Storage,
    person: &gridlink_core::Person,
    requested: Option<&str>,
    base: String,
) -> AppResult<(Option<String>, Option<TownNav>)> {
    let chosen = requested.filter(|t| !t.is_empty()).map(|t| crate::linkage::town_below(person, t)).transpose()?;
    let chosen = chosen.map(|t| t.as_str().to_owned());
    if !person.unit.is_county_level() {
        return Ok((chosen, None));
    }
    let towns = c
        .units()?
        .into_iter()
        .filter(|u| u.kind == "town" && u.code.starts_with(person.unit.as_str()))
        .map(|u| (u.code.clone(), u.name, chosen.as_deref() == Some(u.code.as_str())))
        .collect();
    Ok((chosen.clone(), Some(TownNav { base, towns, all: chosen.is_none() })))
}

/// `town=<code>&` to carry a chosen town into a page's links, or nothing.
fn town_param(town: Option<&str>) -> String {
    town.map(|t| format!("town={t}&")).unwrap_or_default()
}

/// A tab above a list.
#[derive(Debug, Clone)]
pub struct Tab {
    pub href: String,
    pub label: &'static str,
    pub active: bool,
}

/// A titled group of rows.
#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    pub class: &'static str,
    pub rows: Vec<RowView>,
}

/// Where a paged list stands, and the links to its neighbours.
#[derive(Debug, Clone)]
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// The pager of `p`; `base` is the list's URL, ending in `?` or `&`.
    fn new(p: &RowsPage, base: &str) -> Self {
        let link = |n: usize| format!("{base}page={n}");
        Pager {
            page: p.page,
            pages: p.pages,
            total: p.total,
            prev: (p.page > 1).then(|| link(p.page - 1)),
            next: (p.page < p.pages).then(|| link(p.page + 1)),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TabQuery {
    tab: Option<String>,
    /// An action just taken that moved a record out of my scope, and the record's number.
    done: Option<String>,
    no: Option<String>,
    page: Option<String>,
    /// A county's drill-down into one of its towns.
    town: Option<String>,
}

impl TabQuery {
    fn notice(&self) -> Option<String> {
        let kind = ActionKind::parse(self.done.as_deref()?)?;
        let no: String = self.no.as_deref().unwrap_or_default().chars().filter(|c| c.is_alphanumeric() || *c == '-').take(40).collect();
        Some(format!("已办理:{}({no}),该记录已转出本单位。", kind.label()))
    }
}

/// The page asked for (from 1); anything unreadable means the first.
fn page_number(page: Option<&str>) -> usize {
    page.and_then(|p| p.trim().parse().ok()).unwrap_or(1)
}
