//! The map of open incidents over the grid areas.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use crate::app::AppState;
use crate::console::charts::{self, Area, Pin};
use crate::console::views::{Chrome, ListSpec};
use crate::console::{PageResult, Session, html};
use crate::records::load_doc;
use crate::storage::{ListOrder, RecordFilter};

use super::*;

#[derive(Template)]
#[template(path = "map.html")]
struct MapPage {
    chrome: Chrome,
    svg: String,
    town_nav: Option<TownNav>,
    missing: Vec<String>,
    /// Pins shown, open incidents in scope, overdue among them.
    counts: (usize, usize, usize),
}

/// Most pins a map draws.
const MAP_PINS: usize = 2000;

/// `GET /console/map?town`: open incidents over the grid areas of the town, or of every town
/// of the county (or the one it drills into).
pub async fn map(State(state): State<AppState>, session: Session, Query(q): Query<TabQuery>) -> PageResult<Response> {
    let page = read_page(&state, &session, move |c, names, st, s| {
        let (chosen, town_nav) = town_choice(c, s.person(), q.town.as_deref(), "/console/map?".into())?;
        // The grids under the person's town, or under every town of the county.
        let town = chosen.clone().unwrap_or_else(|| s.person().unit.town_or_county().to_owned());
        let mut areas = Vec::new();
        let mut missing = Vec::new();
        for u in c.units()?.into_iter().filter(|u| u.kind == "grid" && u.code.starts_with(&town)) {
            let polygon: Option<Vec<[f64; 2]>> = u.boundary.as_deref().and_then(|b| serde_json::from_str(b).ok());
            match polygon {
                Some(p) if p.len() >= 3 => areas.push(Area { village: u.code[..12].to_owned(), code: u.code, name: u.name, polygon: p }),
                _ => missing.push(u.name),
            }
        }
        let now = st.now_ms();
        let mut pins = Vec::new();
        // Open incidents in my scope (scope in the query), the latest first; a map shows at
        // most MAP_PINS of them and says how many there are.
        let open_incidents = RecordFilter { kind: Some("incident"), open: Some(true), within: chosen.as_deref(), ..RecordFilter::ALL };
        let person = s.person();
        let open: Vec<(String, Option<i64>)> = c
            .list_records(&open_incidents, ListOrder::Updated, person.unit.as_str(), &person.id, MAP_PINS as i64, 0)?
            .into_iter()
            .map(|r| (r.id, r.deadline_ms))
            .collect();
        let open_total = ListSpec { filter: open_incidents, order: ListOrder::Updated }.count(c, person)?;
        let overdue = RecordFilter { due_before: Some(now), ..open_incidents };
        let overdue_total = ListSpec { filter: overdue, order: ListOrder::Updated }.count(c, person)?;
        for (id, deadline) in open {
            let Some(doc) = load_doc(c, &id, &st.server_actor)? else { continue };
            let record = doc.read()?;
            let gridlink_core::RecordBody::Incident(f) = &record.body else { continue };
            let point = match (f.location, areas.iter().find(|a| a.code == f.grid.as_str())) {
                (Some(g), _) => [g.lon, g.lat],
                (None, Some(a)) => charts::point_in(a, &id),
                (None, None) => continue,
            };
            let state = if deadline.is_some_and(|d| d < now) { "overdue" } else { "open" };
            pins.push(Pin { label: format!("{} {}", record.display_no(), record.title()), id, point, state });
        }
        let counts = (pins.len(), open_total, overdue_total);
        let svg = charts::map(&areas, &pins, 1000.0, 620.0);
        Ok(MapPage { chrome: chrome(s, names, "事件地图", "/console/map", true), svg, town_nav, missing, counts })
    })
    .await?;
    Ok(html(&page))
}
