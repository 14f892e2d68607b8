//! The TOML catalog of plans and features, `Catalog::parse` of
//! `kinde-meter-core` (docs/catalog.md).

use std::collections::HashSet;

use kinde_meter_core::catalog::Catalog;

/// The file name errors are to carry.
const ORIGIN: &str = "fuzz.toml";

/// Parses `data` as a catalog. Properties: an error names the file and a line
/// and column inside the text; an accepted catalog keeps every promise the
/// parser documents (unique codes, non-negative amounts, `limit_min ≤
/// limit_max`, limits, thresholds and `enforce_limit` only on metered features,
/// `enforce_limit` only with a `limit_max`, thresholds ascending from 1 to 100).
pub fn catalog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let catalog = match Catalog::parse(text, ORIGIN) {
        Ok(catalog) => catalog,
        Err(error) => {
            assert_eq!(error.origin, ORIGIN);
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&error.line) && error.column >= 1,
                "no location inside the text: {error} ({lines} lines)"
            );
            let line = text.split('\n').nth(error.line - 1).unwrap_or_default();
            assert!(
                error.column <= line.chars().count() + 1,
                "column past the end of line {}: {error}",
                error.line
            );
            assert!(!error.message.is_empty(), "{error:?}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{ORIGIN}:{}:{}: ", error.line, error.column))
            );
            return;
        }
    };
    let mut plans = HashSet::new();
    for plan in &catalog.plans {
        assert!(plans.insert(&plan.code), "duplicate plan {:?}", plan.code);
        let mut features = HashSet::new();
        for f in &plan.features {
            assert!(features.insert(&f.code), "duplicate feature {:?}", f.code);
            for amount in [f.unit_amount, f.fixed_charge, f.limit_max, f.limit_min]
                .into_iter()
                .flatten()
            {
                assert!(amount >= 0, "{f:?}");
            }
            if let (Some(min), Some(max)) = (f.limit_min, f.limit_max) {
                assert!(min <= max, "{f:?}");
            }
            if !f.metered {
                assert!(f.limit_max.is_none() && f.limit_min.is_none(), "{f:?}");
                assert!(f.thresholds.is_empty() && !f.enforce_limit, "{f:?}");
                assert_eq!(f.hard_limit(), None);
            }
            if f.enforce_limit {
                assert!(f.limit_max.is_some(), "{f:?}");
            }
            assert!(f.thresholds.windows(2).all(|w| w[0] < w[1]), "{f:?}");
            assert!(f.thresholds.iter().all(|t| (1..=100).contains(t)), "{f:?}");
            assert_eq!(
                plan.feature(&f.code).map(|found| &found.code),
                Some(&f.code)
            );
        }
    }
}
