//! The statistics page: outcome figures, charts and exports.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use gridlink_core::calendar::local_time;
use gridlink_core::figures::Table;

use crate::app::AppState;
use crate::console::charts::{self};
use crate::console::views::Chrome;
use crate::console::{PageResult, Session, html};
use crate::linkage::{ReportQuery, figures_for, period};

use super::*;

#[derive(Template)]
#[template(path = "stats.html")]
struct StatsPage {
    chrome: Chrome,
    from: String,
    to: String,
    cards: Vec<(&'static str, String)>,
    charts: Vec<String>,
    tables: Vec<Table>,
    export_query: String,
    /// The county's towns to drill down into.
    town_nav: Option<TownNav>,
    /// The town drilled into, by code (kept when the period changes).
    town_code: Option<String>,
    /// The town drilled into, by name.
    town: Option<String>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{:.1}%", v * 100.0))
}

/// `GET /console/stats?from&to`: the figures of the period with charts and export buttons.
pub async fn stats(State(state): State<AppState>, session: Session, Query(q): Query<ReportQuery>) -> PageResult<Response> {
    let (from, to) = period(&q, state.now_ms())?;
    let town = q.town.clone().filter(|t| !t.is_empty());
    let page = read_page(&state, &session, move |c, names, st, s| {
        let f = figures_for(c, st, s.person(), town.as_deref(), from, to)?;
        // A county's operators and leaders compare their towns and drill into one.
        let day = |ms: i64| local_time(ms).format("%Y-%m-%d").to_string();
        let base = format!("/console/stats?from={}&to={}&", day(from), day(to - 1));
        let (_, town_nav) = town_choice(c, s.person(), town.as_deref(), base)?;
        let town_name = town.as_deref().map(|t| names.unit(t));
        let t = &f.totals;
        let cards = vec![
            ("受理事件", t.received.to_string()),
            ("已结案", t.closed.to_string()),
            ("按时处置率(部门)", pct(t.on_time_rate())),
            ("核查按时率(中心)", pct(t.verify_on_time_rate())),
            ("当前超期", t.overdue_now.to_string()),
            ("小事不出村", pct(t.village_share())),
            ("大事不出镇", pct(t.town_share())),
            ("平均满意度", t.satisfaction().map_or_else(|| "—".into(), |v| format!("{v:.2} 分"))),
        ];
        let rate = |r: &gridlink_core::figures::Row| r.on_time_rate().map_or(0.0, |v| v * 100.0);
        let mut charts = Vec::new();
        if f.by_town.len() > 1 {
            // The county's view: its towns side by side.
            charts.push(charts::bars(
                "各镇受理事件数",
                "件",
                &f.by_town.iter().map(|r| (r.name.clone(), f64::from(r.received))).collect::<Vec<_>>(),
                None,
            ));
            charts.push(charts::bars(
                "各镇按时处置率",
                "%",
                &f.by_town.iter().map(|r| (r.name.clone(), rate(r))).collect::<Vec<_>>(),
                Some(100.0),
            ));
        }
        charts.extend([
            charts::bars(
                "各村(社区)受理事件数",
                "件",
                &f.by_village.iter().map(|r| (r.name.clone(), f64::from(r.received))).collect::<Vec<_>>(),
                None,
            ),
            charts::bars(
                "各村(社区)按时处置率",
                "%",
                &f.by_village.iter().map(|r| (r.name.clone(), rate(r))).collect::<Vec<_>>(),
                Some(100.0),
            ),
            charts::bars(
                "各类事件数量",
                "件",
                &f.by_category.iter().map(|r| (r.name.clone(), f64::from(r.received))).collect::<Vec<_>>(),
                None,
            ),
            charts::bars(
                "各部门在办与超期",
                "件",
                &f.by_department.iter().map(|r| (r.name.clone(), f64::from(r.holding_now))).collect::<Vec<_>>(),
                None,
            ),
            charts::bars(
                "当前超期(按责任单位,处置/核查/结案合计)",
                "件",
                &f.by_holder.iter().map(|r| (r.name.clone(), f64::from(r.overdue()))).collect::<Vec<_>>(),
                None,
            ),
        ]);
        let from_s = local_time(from).format("%Y-%m-%d").to_string();
        let to_s = local_time(to - 1).format("%Y-%m-%d").to_string();
        Ok(StatsPage {
            chrome: chrome(s, names, "统计分析", "/console/stats", true),
            export_query: match &town {
                Some(t) => format!("from={from_s}&to={to_s}&town={t}"),
                None => format!("from={from_s}&to={to_s}"),
            },
            town_nav,
            town_code: town.clone(),
            town: town_name,
            from: from_s,
            to: to_s,
            cards,
            charts,
            tables: f.tables(),
        })
    })
    .await?;
    Ok(html(&page))
}
