//! The offline index of a device's records, and the lists and search over it.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::clocks::current_clock;
use crate::error::Result;
use crate::org::UnitCode;
use crate::pii::mask_name;
use crate::record::{Record, RecordBody};
use crate::store::{self, IndexRow};
use crate::workflow::{Folded, RecordKind, Status};

use super::*;

/// One line in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    pub id: String,
    pub kind: RecordKind,
    pub display_no: String,
    pub title: String,
    pub status: Option<Status>,
    pub category: String,
    pub location: String,
    pub holder: Option<String>,
    pub deadline_ms: Option<i64>,
    pub overdue: bool,
    pub conflicts: i64,
    pub updated_ms: i64,
}

/// A list query over the offline index. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordQuery {
    pub kind: Option<RecordKind>,
    pub statuses: Vec<Status>,
    pub open_only: bool,
    /// Category code or its prefix (a major category).
    pub category_prefix: Option<String>,
    /// Records located in this unit or below (a grid, a village).
    pub within: Option<UnitCode>,
    /// Only records whose deadline passed before this instant.
    pub overdue_at: Option<i64>,
    /// Only the acting person's tasks: the records on which they can take an action now (the
    /// record screen's actions, from the one permission table).
    pub my_tasks: bool,
    /// Only finished records (closed, delivered, rejected, withdrawn …).
    #[serde(default)]
    pub closed_only: bool,
    /// Only records held by this unit now.
    #[serde(default)]
    pub holder: Option<UnitCode>,
    /// Only records created in `[created_from_ms, created_to_ms)`.
    #[serde(default)]
    pub created_from_ms: Option<i64>,
    #[serde(default)]
    pub created_to_ms: Option<i64>,
    pub limit: usize,
    pub offset: usize,
}

/// One page of a list or of search results, with the number of all matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<RecordSummary>,
    pub total: u64,
}

impl Client {
    pub(super) fn index(&self, tx: &store::Tx<'_>, record: &Record, folded: &Folded) -> Result<()> {
        let s = &folded.state;
        let cat = self.opts.catalog.as_ref();
        let (category, title, body) = match &record.body {
            RecordBody::Incident(f) => {
                let cname = cat.category(&f.category).map(|c| c.name.as_str()).unwrap_or_default();
                (f.category.clone(), f.title.clone(), [f.description.as_str(), &f.address, &f.notes, cname].join(SEARCH_FIELD_SEP))
            }
            RecordBody::ServiceRequest(f) => {
                let iname = cat.service_item(&f.item).map(|i| i.name.as_str()).unwrap_or(&f.item);
                let title = format!("{iname}({})", mask_name(&f.resident.name));
                (f.item.clone(), title, [f.description.as_str(), &f.notes, &f.resident.name].join(SEARCH_FIELD_SEP))
            }
        };
        let mut body = vec![body];
        body.extend(folded.entries.iter().map(|e| e.entry.note.clone()).filter(|n| !n.is_empty()));
        body.push(record.display_no().to_owned());
        let row = IndexRow {
            id: record.id.clone(),
            kind: record.kind(),
            status: s.status,
            category,
            location: record.location().clone(),
            holder: s.holder.clone(),
            owner: s.owner.clone(),
            reporter: s.reporter.clone(),
            // The due time of the clock running now, so that overdue lists follow the holder.
            deadline_ms: current_clock(record.kind(), s, &self.opts.catalog.center_limits, &self.opts.calendar).map(|c| c.due_ms),
            created_ms: record.created_at_ms,
            updated_ms: s.last_at.map_or(record.created_at_ms, |h| h.wall_ms),
            display_no: record.display_no().to_owned(),
            case_no: record.case_no.clone(),
            title,
            conflicts: folded.conflicts() as i64,
            supervisions: i64::from(s.supervisions),
            satisfaction: s.satisfaction.map(i64::from),
            // The same permission table as the record screen's actions: a task is a record
            // the person can act on now, and nothing else.
            actionable: !self.actions_now(record, folded).is_empty(),
        };
        store::write_index(tx, &row, &body.join(SEARCH_FIELD_SEP))
    }

    /// Lists records from the offline index.
    pub fn list(&self, q: &RecordQuery) -> Result<Vec<RecordSummary>> {
        Ok(self.list_page(q)?.items)
    }

    /// [`Client::list`] with the number of all records matching the filters (for "1–50 of 312").
    pub fn list_page(&self, q: &RecordQuery) -> Result<ListPage> {
        use rusqlite::types::Value;
        let mut sql = String::from(" FROM records WHERE 1=1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(k) = q.kind {
            sql.push_str(" AND kind = ?");
            args.push(k.as_str().to_owned().into());
        }
        if !q.statuses.is_empty() {
            sql.push_str(&format!(" AND status IN ({})", vec!["?"; q.statuses.len()].join(",")));
            args.extend(q.statuses.iter().map(|s| Value::from(s.as_str().to_owned())));
        }
        if q.open_only {
            sql.push_str(" AND open = 1");
        }
        if q.closed_only {
            sql.push_str(" AND open = 0");
        }
        if let Some(c) = &q.category_prefix {
            sql.push_str(" AND category LIKE ? || '%'");
            args.push(c.replace(['%', '_'], "").into());
        }
        if let Some(u) = &q.within {
            let within = store::within_sql("location", "?");
            args.extend(std::iter::repeat_n(Value::from(u.as_str().to_owned()), within.matches('?').count()));
            sql.push_str(&format!(" AND {within}"));
        }
        if let Some(h) = &q.holder {
            sql.push_str(" AND holder = ?");
            args.push(h.as_str().to_owned().into());
        }
        if let Some(from) = q.created_from_ms {
            sql.push_str(" AND created_ms >= ?");
            args.push(from.into());
        }
        if let Some(to) = q.created_to_ms {
            sql.push_str(" AND created_ms < ?");
            args.push(to.into());
        }
        if let Some(t) = q.overdue_at {
            sql.push_str(" AND open = 1 AND status != 'suspended' AND deadline_ms < ?");
            args.push(t.into());
        }
        if q.my_tasks {
            self.me()?;
            sql.push_str(" AND actionable = 1");
        }
        let total: i64 =
            self.conn.prepare_cached(&format!("SELECT count(*){sql}"))?.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
        let mut page =
            format!("SELECT id, kind, display_no, title, status, category, location, holder, deadline_ms, conflicts, updated_ms{sql}");
        page.push_str(" ORDER BY due, updated_ms DESC, id LIMIT ? OFFSET ?");
        args.push(i64::try_from(if q.limit == 0 { 50 } else { q.limit.min(1000) }).unwrap_or(50).into());
        args.push(i64::try_from(q.offset).unwrap_or(0).into());
        let items = self.summaries(&page, rusqlite::params_from_iter(args))?;
        Ok(ListPage { items, total: total.max(0) as u64 })
    }

    /// The current identity's open tasks, soonest deadline first.
    pub fn my_tasks(&self, limit: usize) -> Result<Vec<RecordSummary>> {
        self.list(&RecordQuery { my_tasks: true, limit, ..Default::default() })
    }

    /// Full-text search: the records where one field (title, description, address, notes, an
    /// entry's note, the category or item name, the number) contains the query as a substring,
    /// ASCII letters matched without regard to case (Chinese substrings work: 3+ characters use
    /// the trigram index, shorter terms scan the indexed text). Control characters are removed
    /// from the query and surrounding whitespace is ignored; every other character — quotes,
    /// `*`, `OR`, `NEAR`, `^`, `-`, `:` — is matched as itself, so no query is a syntax error.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<RecordSummary>> {
        Ok(self.search_page(text, limit, 0)?.items)
    }

    /// [`Client::search`] a page at a time (at most 200 a page), with the number of matches.
    pub fn search_page(&self, text: &str, limit: usize, offset: usize) -> Result<ListPage> {
        let cleaned: String = text.chars().filter(|c| !c.is_control()).collect();
        let text = cleaned.trim();
        if text.is_empty() {
            return Ok(ListPage { items: Vec::new(), total: 0 });
        }
        let limit = limit.clamp(1, 200) as i64;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let cols =
            "r.id, r.kind, r.display_no, r.title, r.status, r.category, r.location, r.holder, r.deadline_ms, r.conflicts, r.updated_ms";
        let (filter, term) = if text.chars().count() >= 3 {
            ("records_fts MATCH ?1", format!("\"{}\"", text.replace('"', "\"\"")))
        } else {
            (
                "(f.title LIKE ?1 ESCAPE '\\' OR f.body LIKE ?1 ESCAPE '\\')",
                format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")),
            )
        };
        let total: i64 =
            self.conn.prepare_cached(&format!("SELECT count(*) FROM records_fts f WHERE {filter}"))?.query_row([&term], |r| r.get(0))?;
        let sql = format!(
            "SELECT {cols} FROM records_fts f JOIN records r ON r.rowid = f.rowid WHERE {filter} ORDER BY r.updated_ms DESC, r.id LIMIT ?2 OFFSET ?3"
        );
        let items = self.summaries(&sql, params![term, limit, offset])?;
        Ok(ListPage { items, total: total.max(0) as u64 })
    }

    fn summaries(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RecordSummary>> {
        let now = self.now_ms();
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            let status: Option<String> = r.get(4)?;
            let status = status.as_deref().and_then(Status::parse);
            let deadline_ms: Option<i64> = r.get(8)?;
            let kind: String = r.get(1)?;
            Ok(RecordSummary {
                id: r.get(0)?,
                kind: RecordKind::parse(&kind).unwrap_or(RecordKind::Incident),
                display_no: r.get(2)?,
                title: r.get(3)?,
                status,
                category: r.get(5)?,
                location: r.get(6)?,
                holder: r.get(7)?,
                deadline_ms,
                overdue: status.is_some_and(|s| s.is_open() && s != Status::Suspended) && deadline_ms.is_some_and(|d| d < now),
                conflicts: r.get(9)?,
                updated_ms: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of records stored.
    pub fn record_count(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?)
    }
}
