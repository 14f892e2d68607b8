//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and the inputs
//! of crashes found (`fuzz/regressions/<target>/`) through the targets, so that
//! every input a fuzzer kept is a test of the regular `cargo test`
//! (docs/testing.md#fuzzing).

use std::fs;
use std::path::{Path, PathBuf};

use kinde_meter_fuzz_targets::TARGETS;

/// `fuzz/<kind>/<target>/`'s files, sorted; none if it does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_corpus_file_passes_its_target() {
    for (name, target) in TARGETS {
        let corpus = inputs("corpus", name);
        assert!(!corpus.is_empty(), "the corpus of {name} is empty");
        for file in corpus.iter().chain(&inputs("regressions", name)) {
            let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} failed on {}", file.display());
        }
    }
}
