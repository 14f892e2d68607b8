//! The plan catalog (SPEC §6): plans, their intervals and features, from TOML.
//!
//! Errors name the file, the line and what is wrong, because a catalog is edited by
//! hand and read once at start, where a vague error costs an outage.

use std::collections::HashSet;

use serde::Deserialize;
use toml::Spanned;

use crate::ids::{FeatureCode, PlanCode};
use crate::period::Interval;

/// All plans a server knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The plans, in file order.
    pub plans: Vec<Plan>,
}

/// A plan: a code, a billing interval and features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plan's code, e.g. `pro`.
    pub code: PlanCode,
    /// Display name.
    pub name: String,
    /// Billing interval.
    pub interval: Interval,
    /// Billing group (Kinde's `billing_group_id`), if any.
    pub group: Option<String>,
    /// The plan's features, in file order.
    pub features: Vec<Feature>,
}

/// A feature of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// The feature's code (Kinde's key), e.g. `api_calls`.
    pub code: FeatureCode,
    /// Display name.
    pub name: String,
    /// Whether usage is recorded for it.
    pub metered: bool,
    /// Price per unit in cents, if set.
    pub unit_amount: Option<i64>,
    /// Entitlement limit, if set.
    pub limit_max: Option<i64>,
}

impl Plan {
    /// The feature with `code`, if the plan has it.
    pub fn feature(&self, code: &FeatureCode) -> Option<&Feature> {
        self.features.iter().find(|f| &f.code == code)
    }

    /// The metered features, in catalog order.
    pub fn metered_features(&self) -> impl Iterator<Item = &Feature> {
        self.features.iter().filter(|f| f.metered)
    }
}

impl Catalog {
    /// The plan with `code`, if any.
    pub fn plan(&self, code: &PlanCode) -> Option<&Plan> {
        self.plans.iter().find(|p| &p.code == code)
    }

    /// The demo catalog `kinde-meter serve` uses without `--catalog`.
    pub fn demo() -> Catalog {
        Catalog::parse(DEMO_CATALOG, "<demo catalog>").expect("the demo catalog is valid")
    }

    /// Parses a catalog; `origin` (usually the file path) is named in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            CatalogError {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            CatalogError {
                origin: origin.to_owned(),
                line,
                column,
                message,
            }
        };
        let mut plans = Vec::with_capacity(raw.plans.len());
        let mut plan_codes = HashSet::new();
        for plan in raw.plans {
            let code = PlanCode::parse(plan.code.get_ref().clone())
                .map_err(|e| at(plan.code.span(), format!("plan code {e}")))?;
            if !plan_codes.insert(code.clone()) {
                return Err(at(
                    plan.code.span(),
                    format!("duplicate plan code {code:?}"),
                ));
            }
            let interval: Interval =
                plan.interval
                    .get_ref()
                    .parse()
                    .map_err(|e: crate::period::UnknownInterval| {
                        at(plan.interval.span(), e.to_string())
                    })?;
            let mut features = Vec::with_capacity(plan.features.len());
            let mut feature_codes = HashSet::new();
            for feature in plan.features {
                let fcode = FeatureCode::parse(feature.code.get_ref().clone())
                    .map_err(|e| at(feature.code.span(), format!("feature code {e}")))?;
                if !feature_codes.insert(fcode.clone()) {
                    return Err(at(
                        feature.code.span(),
                        format!("duplicate feature code {fcode:?} in plan {code:?}"),
                    ));
                }
                for (name, value) in [
                    ("unit_amount", &feature.unit_amount),
                    ("limit_max", &feature.limit_max),
                ] {
                    if let Some(v) = value
                        && *v.get_ref() < 0
                    {
                        return Err(at(v.span(), format!("{name} must not be negative")));
                    }
                }
                features.push(Feature {
                    name: feature.name.unwrap_or_else(|| fcode.to_string()),
                    code: fcode,
                    metered: feature.metered,
                    unit_amount: feature.unit_amount.map(Spanned::into_inner),
                    limit_max: feature.limit_max.map(Spanned::into_inner),
                });
            }
            plans.push(Plan {
                name: plan.name.unwrap_or_else(|| code.to_string()),
                code,
                interval,
                group: plan.group,
                features,
            });
        }
        Ok(Catalog { plans })
    }
}

/// What is wrong with a catalog, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct CatalogError {
    /// The file (or `<demo catalog>`).
    pub origin: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    plans: Vec<RawPlan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    code: Spanned<String>,
    name: Option<String>,
    interval: Spanned<String>,
    group: Option<String>,
    #[serde(default)]
    features: Vec<RawFeature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    code: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    metered: bool,
    unit_amount: Option<Spanned<i64>>,
    limit_max: Option<Spanned<i64>>,
}

/// The demo catalog: what `kinde-meter serve` loads without `--catalog`.
pub const DEMO_CATALOG: &str = r#"# kinde-meter demo catalog
[[plans]]
code = "pro"
name = "Pro"
interval = "month"
group = "saas"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
unit_amount = 2
limit_max = 1000000

[[plans.features]]
code = "storage_gb"
name = "Storage (GB)"
metered = true
unit_amount = 10

[[plans.features]]
code = "sso"
name = "Single sign-on"
metered = false

[[plans]]
code = "starter"
name = "Starter"
interval = "month"
group = "saas"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true
unit_amount = 3
limit_max = 10000

[[plans]]
code = "daily"
name = "Daily"
interval = "day"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true

[[plans]]
code = "weekly"
name = "Weekly"
interval = "week"

[[plans.features]]
code = "api_calls"
name = "API calls"
metered = true

[[plans]]
code = "annual"
name = "Annual"
interval = "year"

[[plans.features]]
code = "seats"
name = "Seats"
metered = true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_catalog_loads() {
        let c = Catalog::demo();
        let pro = c.plan(&PlanCode::parse("pro").unwrap()).unwrap();
        assert_eq!(pro.interval, Interval::Month);
        assert_eq!(pro.group.as_deref(), Some("saas"));
        assert_eq!(pro.metered_features().count(), 2);
        assert!(
            !pro.feature(&FeatureCode::parse("sso").unwrap())
                .unwrap()
                .metered
        );
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let text = "[[plans]]\ncode = \"pro\"\ninterval = \"fortnight\"\n";
        let e = Catalog::parse(text, "plans.toml").unwrap_err();
        assert_eq!((e.origin.as_str(), e.line), ("plans.toml", 3));
        assert!(e.message.contains("fortnight"), "{e}");

        let text = "[[plans]]\ncode = \"a\"\ninterval = \"day\"\n[[plans]]\ncode = \"a\"\ninterval = \"day\"\n";
        let e = Catalog::parse(text, "plans.toml").unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.to_string().starts_with("plans.toml:5:"), "{e}");

        let e = Catalog::parse("[[plans]]\ncode = \"a\"\n", "p.toml").unwrap_err();
        assert!(e.message.contains("interval"), "{e}");

        let e = Catalog::parse(
            "[[plans]]\ncode = \"a\"\ninterval = \"day\"\ncolour = 1\n",
            "p.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(e.line, 4);
    }
}
