//! The plan catalog: plans, their intervals and features, from TOML (docs/catalog.md).
//!
//! Errors name the file, the line, the plan and the feature, and what is wrong,
//! because a catalog is edited by hand and read once at start, where a vague error
//! costs an outage.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::ids::{FeatureCode, PlanCode};
use crate::period::Interval;

/// The percents of `limit_max` at which a metered feature raises threshold events
/// when its catalog entry names none.
pub const DEFAULT_THRESHOLDS: [u8; 2] = [80, 100];

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

/// A feature of a plan, with the terms of its entitlement.
///
/// The parser guarantees: amounts and limits are non-negative, `limit_min ≤
/// limit_max`, limits, thresholds and `enforce_limit` only on metered features,
/// `enforce_limit` only with a `limit_max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// The feature's code (Kinde's key), e.g. `api_calls`.
    pub code: FeatureCode,
    /// Display name.
    pub name: String,
    /// Whether usage is recorded for it.
    pub metered: bool,
    /// The price's name as the catalog gives it; `None` when absent, which the API
    /// answers with the feature's name (see [`Feature::price_name`]).
    pub price_name: Option<String>,
    /// Price per unit in cents, if set.
    pub unit_amount: Option<i64>,
    /// Fixed charge in cents, if set.
    pub fixed_charge: Option<i64>,
    /// Entitlement limit, if set; `None` is unlimited.
    pub limit_max: Option<i64>,
    /// Entitlement minimum, if set.
    pub limit_min: Option<i64>,
    /// Whether usage beyond `limit_max` is refused instead of recorded.
    pub enforce_limit: bool,
    /// Percents of `limit_max` (1 to 100, ascending, no repeats) whose crossing
    /// raises a threshold event: [`DEFAULT_THRESHOLDS`] for a metered feature whose
    /// entry names none, empty for a feature that is not metered.
    pub thresholds: Vec<u8>,
}

impl Feature {
    /// The name of the feature's price: the catalog's `price_name`, else the
    /// feature's name.
    pub fn price_name(&self) -> &str {
        self.price_name.as_deref().unwrap_or(&self.name)
    }

    /// The limit the period's usage may never pass, when the catalog enforces one.
    pub fn hard_limit(&self) -> Option<i64> {
        self.limit_max
            .filter(|_| self.metered && self.enforce_limit)
    }
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
        let at = |span: Range<usize>, message: String| {
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
                features.push(
                    parse_feature(feature, fcode, &code)
                        .map_err(|FeatureError { span, message }| at(span, message))?,
                );
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
    price_name: Option<String>,
    // Numbers, flags and lists are read as any TOML value and checked by
    // `parse_feature`, so that a fractional limit, say, is reported with its plan
    // and feature rather than as a bare type error.
    unit_amount: Option<Spanned<Value>>,
    fixed_charge: Option<Spanned<Value>>,
    limit_max: Option<Spanned<Value>>,
    limit_min: Option<Spanned<Value>>,
    enforce_limit: Option<Spanned<Value>>,
    thresholds: Option<Spanned<Value>>,
}

/// A problem with a feature's terms: where, and what (plan and feature named).
struct FeatureError {
    span: Range<usize>,
    message: String,
}

/// Checks a feature's terms and builds it.
fn parse_feature(
    raw: RawFeature,
    code: FeatureCode,
    plan: &PlanCode,
) -> Result<Feature, FeatureError> {
    let fail = |field: &Spanned<Value>, what: String| FeatureError {
        span: field.span(),
        message: format!(
            "plan {:?}, feature {:?}: {what}",
            plan.as_str(),
            code.as_str()
        ),
    };
    let amount = |field: &Option<Spanned<Value>>, name: &str| match field {
        None => Ok(None),
        Some(f) => match f.get_ref() {
            Value::Integer(i) if *i >= 0 => Ok(Some(*i)),
            other => Err(fail(
                f,
                format!(
                    "{name} must be a non-negative integer, not {}",
                    describe(other)
                ),
            )),
        },
    };
    let unit_amount = amount(&raw.unit_amount, "unit_amount")?;
    let fixed_charge = amount(&raw.fixed_charge, "fixed_charge")?;
    let limit_max = amount(&raw.limit_max, "limit_max")?;
    let limit_min = amount(&raw.limit_min, "limit_min")?;
    let enforce_limit = match &raw.enforce_limit {
        None => false,
        Some(f) => match f.get_ref() {
            Value::Boolean(b) => *b,
            other => {
                let what = format!(
                    "enforce_limit must be true or false, not {}",
                    describe(other)
                );
                return Err(fail(f, what));
            }
        },
    };
    let thresholds = match &raw.thresholds {
        None if raw.metered => DEFAULT_THRESHOLDS.to_vec(),
        None => Vec::new(),
        Some(f) => parse_thresholds(f.get_ref()).map_err(|found| {
            fail(
                f,
                format!("thresholds must be a list of whole percents from 1 to 100, not {found}"),
            )
        })?,
    };

    if !raw.metered {
        let misplaced = [
            ("limit_max", raw.limit_max.as_ref()),
            ("limit_min", raw.limit_min.as_ref()),
            ("thresholds", raw.thresholds.as_ref()),
            (
                "enforce_limit",
                raw.enforce_limit.as_ref().filter(|_| enforce_limit),
            ),
        ]
        .into_iter()
        .find_map(|(name, f)| f.map(|f| (name, f)));
        if let Some((name, f)) = misplaced {
            return Err(fail(
                f,
                format!("{name} applies only to a metered feature (metered = true)"),
            ));
        }
    }
    if let (Some(min), Some(max), Some(f)) = (limit_min, limit_max, &raw.limit_min)
        && min > max
    {
        return Err(fail(
            f,
            format!("limit_min ({min}) must not exceed limit_max ({max})"),
        ));
    }
    if let Some(f) = &raw.enforce_limit
        && enforce_limit
        && limit_max.is_none()
    {
        return Err(fail(f, "enforce_limit = true needs a limit_max".to_owned()));
    }

    Ok(Feature {
        name: raw.name.unwrap_or_else(|| code.to_string()),
        code,
        metered: raw.metered,
        price_name: raw.price_name,
        unit_amount,
        fixed_charge,
        limit_max,
        limit_min,
        enforce_limit,
        thresholds,
    })
}

/// A `thresholds` list, ascending and without repeats; `Err` describes the
/// offending value.
fn parse_thresholds(value: &Value) -> Result<Vec<u8>, String> {
    let Value::Array(items) = value else {
        return Err(describe(value));
    };
    let mut percents = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Integer(p @ 1..=100) => {
                percents.push(u8::try_from(*p).expect("1 to 100 fits in a u8"));
            }
            other => return Err(describe(other)),
        }
    }
    percents.sort_unstable();
    percents.dedup();
    Ok(percents)
}

/// A TOML value as an error message shows it.
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => value.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
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
thresholds = [80, 100]

[[plans.features]]
code = "storage_gb"
name = "Storage (GB)"
metered = true
unit_amount = 10

[[plans.features]]
code = "sso"
name = "Single sign-on"
metered = false
fixed_charge = 1500

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

    fn one_feature(lines: &str) -> Result<Feature, CatalogError> {
        let text = format!(
            "[[plans]]\ncode = \"pro\"\ninterval = \"month\"\n\n[[plans.features]]\ncode = \"api_calls\"\n{lines}"
        );
        Catalog::parse(&text, "plans.toml").map(|mut c| c.plans.remove(0).features.remove(0))
    }

    #[test]
    fn entitlement_terms_are_read_with_their_defaults() {
        let f = one_feature("metered = true\n").unwrap();
        assert_eq!(f.price_name, None);
        assert_eq!(f.price_name(), "api_calls");
        assert_eq!(
            (f.unit_amount, f.fixed_charge, f.limit_max, f.limit_min),
            (None, None, None, None)
        );
        assert!(!f.enforce_limit);
        assert_eq!(f.thresholds, DEFAULT_THRESHOLDS);
        assert_eq!(f.hard_limit(), None);

        let f = one_feature(
            "name = \"API calls\"\nmetered = true\nprice_name = \"Calls\"\nunit_amount = 0\n\
             fixed_charge = 900\nlimit_max = 10\nlimit_min = 10\nenforce_limit = true\n\
             thresholds = [100, 50, 50, 1]\n",
        )
        .unwrap();
        assert_eq!(f.price_name(), "Calls");
        assert_eq!(
            (f.unit_amount, f.fixed_charge, f.limit_max, f.limit_min),
            (Some(0), Some(900), Some(10), Some(10))
        );
        assert_eq!(f.thresholds, [1, 50, 100]);
        assert_eq!(f.hard_limit(), Some(10));

        let f =
            one_feature("metered = true\nthresholds = []\nlimit_max = 5\nenforce_limit = false\n")
                .unwrap();
        assert!(f.thresholds.is_empty());
        assert_eq!(f.hard_limit(), None);

        let f =
            one_feature("fixed_charge = 1500\nunit_amount = 3\nenforce_limit = false\n").unwrap();
        assert!(!f.metered);
        assert!(f.thresholds.is_empty());
        assert_eq!(f.fixed_charge, Some(1500));
    }

    #[test]
    fn bad_terms_are_refused_naming_file_plan_and_feature() {
        for (lines, line, problem) in [
            (
                "metered = true\nlimit_max = -1\n",
                8,
                "limit_max must be a non-negative integer, not -1",
            ),
            (
                "metered = true\nlimit_max = 1.5\n",
                8,
                "limit_max must be a non-negative integer, not 1.5",
            ),
            (
                "metered = true\nlimit_max = \"10\"\n",
                8,
                "not the string \"10\"",
            ),
            (
                "metered = true\nlimit_min = -2\n",
                8,
                "limit_min must be a non-negative integer",
            ),
            (
                "metered = true\nlimit_min = 0.5\n",
                8,
                "limit_min must be a non-negative integer",
            ),
            (
                "unit_amount = -2\n",
                7,
                "unit_amount must be a non-negative integer, not -2",
            ),
            (
                "fixed_charge = -1\n",
                7,
                "fixed_charge must be a non-negative integer, not -1",
            ),
            (
                "fixed_charge = 9.99\n",
                7,
                "fixed_charge must be a non-negative integer, not 9.99",
            ),
            (
                "metered = true\nlimit_max = 5\nlimit_min = 6\n",
                9,
                "limit_min (6) must not exceed limit_max (5)",
            ),
            (
                "metered = true\nthresholds = [0]\n",
                8,
                "thresholds must be a list of whole percents from 1 to 100, not 0",
            ),
            ("metered = true\nthresholds = [80, 101]\n", 8, "not 101"),
            ("metered = true\nthresholds = [80.5]\n", 8, "not 80.5"),
            ("metered = true\nthresholds = 80\n", 8, "not 80"),
            ("metered = true\nthresholds = [-80]\n", 8, "not -80"),
            (
                "metered = true\nenforce_limit = true\n",
                8,
                "enforce_limit = true needs a limit_max",
            ),
            (
                "metered = true\nlimit_max = 1\nenforce_limit = \"yes\"\n",
                9,
                "enforce_limit must be true or false",
            ),
            (
                "limit_max = 10\n",
                7,
                "limit_max applies only to a metered feature",
            ),
            (
                "metered = false\nlimit_min = 0\n",
                8,
                "limit_min applies only to a metered feature",
            ),
            (
                "thresholds = [80]\n",
                7,
                "thresholds applies only to a metered feature",
            ),
            (
                "enforce_limit = true\n",
                7,
                "enforce_limit applies only to a metered feature",
            ),
        ] {
            let e = one_feature(lines).unwrap_err();
            assert_eq!(
                (e.origin.as_str(), e.line),
                ("plans.toml", line),
                "{lines}: {e}"
            );
            assert!(
                e.message
                    .starts_with("plan \"pro\", feature \"api_calls\": "),
                "{lines}: {e}"
            );
            assert!(e.message.contains(problem), "{lines}: {e}");
        }
    }

    #[test]
    fn the_demo_catalog_keeps_usage_unenforced() {
        let c = Catalog::demo();
        for plan in &c.plans {
            for f in &plan.features {
                assert_eq!(f.hard_limit(), None, "{}/{}", plan.code, f.code);
            }
        }
    }
}
