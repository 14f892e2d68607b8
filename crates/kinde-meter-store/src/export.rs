//! The usage export's read ([`crate::Store::export_usage`],
//! `docs/import-export.md#export`): every customer's agreements page by page,
//! each with the usage of its plan's metered features in the period the export
//! covers for it.

use jiff::Timestamp;
use kinde_meter_core::{
    agreement::Agreement, catalog::Plan, export::ExportPeriod, ids::AgreementId,
};

use crate::UsageReport;

/// Most agreements one [`ExportQuery`] may ask for.
pub const MAX_EXPORT_PAGE: usize = 1000;

/// A page of the usage export.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    /// The page after this agreement id (in the store's order of ids); `None`
    /// for the first page.
    pub after: Option<AgreementId>,
    /// Agreements to look at, 1 to [`MAX_EXPORT_PAGE`] (those the period
    /// leaves out included).
    pub page_size: usize,
    /// Which period of each agreement.
    pub period: ExportPeriod,
    /// The instant `current` and `previous` are taken at.
    pub now: Timestamp,
}

/// One page of the usage export, in order of agreement ids.
#[derive(Debug, Clone)]
pub struct ExportPage {
    /// The page's agreements active in their period, with their usage.
    pub agreements: Vec<AgreementUsage>,
    /// Where the next page starts (the last agreement looked at), `None` when
    /// no agreement follows this page.
    pub next: Option<AgreementId>,
}

/// An agreement, its plan and its usage in the period the export covers for it.
#[derive(Debug, Clone)]
pub struct AgreementUsage {
    /// The agreement.
    pub agreement: Agreement,
    /// Its plan: every feature, in catalog order.
    pub plan: Plan,
    /// The usage of the plan's metered features in the period, in catalog
    /// order, read from the maintained aggregates (as usage read-back reads it).
    pub usage: UsageReport,
}
