//! The four-level linkage on the server: the deadline sweeper (督办), figures, the station ledger
//! (台账), hand-off manifests, notices and the routing rules an admin edits.

mod notices;
mod reports;
mod routing;
mod sweeper;

pub use notices::{PAGE as NOTICES_PAGE, notices};
pub use reports::{ReportQuery, batch, export, figures, figures_for, ledger, period, records_where, town_below};
pub use routing::{get_routing, put_routing, set_routing};
pub use sweeper::sweep;
