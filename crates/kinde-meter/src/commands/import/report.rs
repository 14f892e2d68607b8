//! What an import tells: every rejected row on stderr and in the reject file,
//! the progress bar, and the closing summary (docs/import-export.md#import).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::source::{COMMENT, Reason};

/// The default reject file of `input`: `.rejects` before its extension
/// (`usage.csv` → `usage.rejects.csv`), so that it is imported again, once
/// fixed, in the same format.
pub fn default_rejects_path(input: &Path) -> PathBuf {
    match input.extension().and_then(|e| e.to_str()) {
        Some(extension) => input.with_extension(format!("rejects.{extension}")),
        None => {
            let mut name = input.as_os_str().to_owned();
            name.push(".rejects");
            PathBuf::from(name)
        }
    }
}

/// The reject file: created at the first rejected row, holding the CSV
/// header, then per row a comment `# line N: CODE: message` and the row as in
/// the input. Comments are skipped on import, so the fixed file imports as is.
pub struct Rejects {
    path: PathBuf,
    header: Vec<u8>,
    file: Option<BufWriter<File>>,
}

impl Rejects {
    /// A reject file at `path`, for rows under `header` (empty for NDJSON).
    pub fn new(path: PathBuf, header: Vec<u8>) -> Rejects {
        Rejects {
            path,
            header,
            file: None,
        }
    }

    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a row was written.
    pub fn written(&self) -> bool {
        self.file.is_some()
    }

    /// Writes the row of `line`, `raw` as in the input, refused for `reason`.
    pub fn write(&mut self, line: u64, raw: &[u8], reason: &Reason) -> anyhow::Result<()> {
        let context = || format!("cannot write the reject file {}", self.path.display());
        if self.file.is_none() {
            let mut file = BufWriter::new(File::create(&self.path).with_context(context)?);
            write_line(&mut file, &self.header).with_context(context)?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("just created");
        writeln!(file, "{} line {line}: {reason}", char::from(COMMENT)).with_context(context)?;
        write_line(file, raw).with_context(context)
    }

    /// Flushes what was written.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush()
                .with_context(|| format!("cannot write the reject file {}", self.path.display()))?;
        }
        Ok(())
    }
}

/// Writes `bytes` ending with one line break (the file's last row may lack it).
fn write_line(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The counts of an import.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Rows read.
    pub read: u64,
    /// Rows the server stored (now or in an earlier run).
    pub imported: u64,
    /// Rows refused.
    pub rejected: u64,
}

/// The progress bar on stderr: bytes of the file done, with the rows'
/// counts and rate; drawn only when stderr is a terminal.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// A bar for a file of `bytes`.
    pub fn new(bytes: u64) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {percent:>3}% ETA {eta:<4} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    /// Shows `tally` with the file done up to `offset`.
    pub fn update(&self, offset: u64, tally: &Tally) {
        self.bar.set_position(offset);
        self.bar.set_message(format!(
            "{} imported, {} rejected, {:.0} records/s",
            tally.imported,
            tally.rejected,
            per_second(tally.read, self.started.elapsed())
        ));
    }

    /// Prints `line` on stderr above the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar and prints the summary of `tally` (`stopped`: the
    /// import ended early, on an error printed after it).
    pub fn finish(&self, tally: &Tally, rejects: &Rejects, stopped: bool) {
        self.bar.finish_and_clear();
        let elapsed = self.started.elapsed();
        let mut line = format!(
            "kinde-meter import: {} read, {} imported, {} rejected",
            tally.read, tally.imported, tally.rejected
        );
        if rejects.written() {
            line.push_str(&format!(" (written to {})", rejects.path().display()));
        }
        line.push_str(&format!(
            ", in {:.1} s ({:.0} records/s)",
            elapsed.as_secs_f64(),
            per_second(tally.read, elapsed)
        ));
        if stopped {
            let unsure = tally.read - tally.imported - tally.rejected;
            line.push_str(&format!(
                "; stopped early with {unsure} rows not confirmed (import the same file \
                 again to complete it: what was stored is not counted twice)"
            ));
        }
        eprintln!("{line}");
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_files_keep_the_extension() {
        assert_eq!(
            default_rejects_path(Path::new("/data/usage.csv")),
            Path::new("/data/usage.rejects.csv")
        );
        assert_eq!(
            default_rejects_path(Path::new("usage.2024.jsonl")),
            Path::new("usage.2024.rejects.jsonl")
        );
        assert_eq!(
            default_rejects_path(Path::new("usage")),
            Path::new("usage.rejects")
        );
    }
}
