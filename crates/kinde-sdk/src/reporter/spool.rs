//! The spool: the append-only log that keeps unsent usage across crashes and
//! outages, and the state it describes.
//!
//! Format, why replays never double count, crashes and compaction:
//! `docs/design.md#spool-format`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pending::{Group, Pending, Unit, units};
use super::{RecordError, ReporterError};

/// The format version written in the header.
const VERSION: u32 = 1;
/// Above this size (or half the maximum, if smaller) the log is compacted once
/// something in it may be dead.
const COMPACT_AT: u64 = 1 << 20;
/// A log with nothing pending is emptied once it is this large (and on close).
const COMPACT_IDLE_AT: u64 = 64 << 10;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t")]
enum Line {
    #[serde(rename = "h")]
    Header { v: u32 },
    #[serde(rename = "r")]
    Record(Group),
    #[serde(rename = "c")]
    Convert { units: Vec<Unit> },
    #[serde(rename = "k")]
    Ack { id: u64 },
    #[serde(rename = "s")]
    Split { id: u64 },
}

fn encode(line: &Line) -> Vec<u8> {
    let json = serde_json::to_vec(line).expect("spool lines are plain data");
    let mut out = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

fn decode(raw: &[u8]) -> Result<Line, String> {
    if raw.len() < 10 || raw[8] != b' ' {
        return Err("not a spool line".to_owned());
    }
    let expected = std::str::from_utf8(&raw[..8])
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("the checksum field is not hex")?;
    let json = &raw[9..];
    if crc32fast::hash(json) != expected {
        return Err("checksum mismatch".to_owned());
    }
    serde_json::from_slice(json).map_err(|error| format!("unreadable entry: {error}"))
}

/// What [`replay_for_fuzzing`] read from a spool's bytes.
#[doc(hidden)]
#[derive(Debug)]
pub struct ReplayedSpool {
    /// The valid prefix, which opening keeps (the rest, a torn last line, is cut off).
    pub valid_len: usize,
    /// The log that compacting the replayed state writes.
    pub compacted: Vec<u8>,
    /// Recorded values not yet delivered, as the reporter's stats count them.
    pub undelivered: u64,
}

/// Replays a spool's bytes as opening the spool does, without a file: the
/// entry point of the fuzz target `spool` (`fuzz/`, docs/testing.md#fuzzing).
/// Not part of the SDK's API.
#[doc(hidden)]
pub fn replay_for_fuzzing(bytes: &[u8], window: Duration) -> Result<ReplayedSpool, String> {
    let mut spool = Spool::memory(u64::MAX, window);
    let valid_len = spool
        .replay(bytes, Path::new("<fuzz input>"))
        .map_err(|error| error.to_string())?;
    Ok(ReplayedSpool {
        valid_len,
        compacted: spool.snapshot(),
        undelivered: spool.undelivered(),
    })
}

/// Checks what no spool this SDK wrote holds and its counters could not take,
/// and adds the line's counts of values to `counted`: a unit id from 2^63 on
/// (ids count up from 1, and the next one must not overflow), or more values
/// than a `u64` counts (the sums of undelivered values, here and in the worker,
/// must not overflow; they are never more than `counted`). Lines with such
/// numbers panicked the fuzz target `spool` (docs/testing.md#fuzzing).
fn in_range(counted: u64, line: &Line) -> Result<u64, &'static str> {
    const TOO_MANY: &str = "more recorded values than a 64-bit count holds";
    match line {
        Line::Record(group) => counted.checked_add(group.count).ok_or(TOO_MANY),
        Line::Convert { units } => {
            if units.iter().any(|unit| unit.id >= 1 << 63) {
                return Err("a unit id out of range");
            }
            units
                .iter()
                .flat_map(|unit| &unit.counts)
                .try_fold(counted, |sum, &count| sum.checked_add(count))
                .ok_or(TOO_MANY)
        }
        Line::Header { .. } | Line::Ack { .. } | Line::Split { .. } => Ok(counted),
    }
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The file behind a spool, and the lock that makes it this process's.
#[derive(Debug)]
struct Storage {
    path: PathBuf,
    file: Arc<File>,
    /// Holds an exclusive lock on `<spool>.lock` (released when dropped, and by
    /// the kernel when the process dies).
    _lock: File,
}

/// Pending usage and units, and the log they are kept in (none for an
/// in-memory reporter).
#[derive(Debug)]
pub(crate) struct Spool {
    storage: Option<Storage>,
    pending: Pending,
    units: BTreeMap<u64, Unit>,
    next_unit: u64,
    window: Duration,
    max_bytes: u64,
    /// Bytes in the log (for an in-memory spool: that a log would hold).
    len: u64,
    /// Bytes appended since opening, across compactions: positions for group
    /// commit.
    written: u64,
    /// Of those, how many are known to be on disk.
    durable: u64,
    /// Lines were appended since the last fsync.
    unsynced: bool,
    /// Something was acknowledged or converted since the last compaction.
    dirty: bool,
    /// `len` right after the last compaction (or opening): what was appended
    /// since may have coalesced into less.
    compacted_len: u64,
    /// An I/O failure left the log in doubt: nothing more is recorded or sent.
    failed: bool,
    closed: bool,
}

impl Spool {
    fn empty(storage: Option<Storage>, max_bytes: u64, window: Duration) -> Spool {
        Spool {
            storage,
            pending: Pending::default(),
            units: BTreeMap::new(),
            next_unit: 1,
            window,
            max_bytes,
            len: 0,
            written: 0,
            durable: 0,
            unsynced: false,
            dirty: false,
            compacted_len: 0,
            failed: false,
            closed: false,
        }
    }

    /// A spool that keeps nothing on disk.
    pub(crate) fn memory(max_bytes: u64, window: Duration) -> Spool {
        let mut spool = Spool::empty(None, max_bytes, window);
        spool.len = encode(&Line::Header { v: VERSION }).len() as u64;
        spool.compacted_len = spool.len;
        spool
    }

    /// Opens (or creates) the log at `path`, locks it for this process and
    /// replays it.
    pub(crate) fn open(
        path: &Path,
        max_bytes: u64,
        window: Duration,
    ) -> Result<Spool, ReporterError> {
        let io = |source: io::Error| ReporterError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(sibling(path, ".lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ReporterError::SpoolInUse {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        // A compaction that crashed before its rename left the log intact.
        let _ = fs::remove_file(sibling(path, ".tmp"));

        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io)?;
        let storage = Storage {
            path: path.to_owned(),
            file: Arc::new(file),
            _lock: lock,
        };
        let mut spool = Spool::empty(Some(storage), max_bytes, window);
        let valid = spool.replay(&bytes, path)?;
        let storage = spool.storage.as_ref().expect("opened on a file");
        if valid < bytes.len() {
            // A torn last line: cut it off before appending after it.
            storage.file.set_len(valid as u64).map_err(io)?;
            storage.file.sync_all().map_err(io)?;
        }
        spool.len = valid as u64;
        if valid == 0 {
            spool
                .append(&encode(&Line::Header { v: VERSION }))
                .map_err(io)?;
            spool.sync().map_err(io)?;
            sync_parent(path).map_err(io)?;
        }
        spool.compacted_len = spool.len;
        Ok(spool)
    }

    /// Applies the log's lines; returns the length of its valid prefix.
    fn replay(&mut self, bytes: &[u8], path: &Path) -> Result<usize, ReporterError> {
        let corrupt = |line: usize, reason: String| ReporterError::SpoolCorrupt {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut offset = 0;
        let mut valid = 0;
        let mut number = 0;
        let mut torn: Option<(usize, String)> = None;
        // Every count of values read so far: at least what is undelivered.
        let mut counted = 0u64;
        while let Some(end) = bytes[offset..].iter().position(|&b| b == b'\n') {
            number += 1;
            match decode(&bytes[offset..offset + end]) {
                Ok(line) => {
                    if let Some((at, reason)) = torn {
                        return Err(corrupt(at, reason));
                    }
                    match (number, line) {
                        (1, Line::Header { v: VERSION }) => {}
                        (1, Line::Header { v }) => {
                            return Err(corrupt(1, format!("unsupported format version {v}")));
                        }
                        (1, _) => return Err(corrupt(1, "no header".to_owned())),
                        (_, Line::Header { .. }) => {
                            return Err(corrupt(number, "a second header".to_owned()));
                        }
                        (_, line) => {
                            counted = in_range(counted, &line)
                                .map_err(|reason| corrupt(number, reason.to_owned()))?;
                            self.apply(line);
                        }
                    }
                    valid = offset + end + 1;
                }
                Err(reason) => {
                    torn.get_or_insert((number, reason));
                }
            }
            offset += end + 1;
        }
        Ok(valid)
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Header { .. } => {}
            Line::Record(group) => self.pending.add(group, self.window),
            Line::Convert { units } => {
                // Every recorded line before this one is in these units.
                self.pending.take();
                for unit in units {
                    self.next_unit = self.next_unit.max(unit.id + 1);
                    self.units.insert(unit.id, unit);
                }
            }
            Line::Ack { id } => {
                self.units.remove(&id);
            }
            Line::Split { id } => {
                if let Some(unit) = self.units.get_mut(&id) {
                    unit.split = true;
                }
            }
        }
    }

    /// Appends whole lines; a failed write is cut off again so the next line
    /// does not follow a torn one.
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(storage) = &self.storage {
            if let Err(error) = (&*storage.file).write_all(line) {
                if storage.file.set_len(self.len).is_err() {
                    self.failed = true;
                }
                return Err(error);
            }
            self.unsynced = true;
        }
        self.len += line.len() as u64;
        self.written += line.len() as u64;
        if self.storage.is_none() {
            self.durable = self.written;
        }
        Ok(())
    }

    /// Appends recorded usage; returns the position to sync up to for it to be
    /// durable.
    pub(crate) fn record(&mut self, group: Group) -> Result<u64, RecordError> {
        if self.closed {
            return Err(RecordError::Closed);
        }
        if self.failed {
            return Err(RecordError::SpoolFailed);
        }
        let line = encode(&Line::Record(group.clone()));
        // Full: compacting helps if units were acknowledged, or if enough was
        // appended since the last compaction to have coalesced (a hot key
        // during an outage writes a line per value into one group). Otherwise
        // the spool is full of live usage, and refusing is cheap.
        let grown = self.len - self.compacted_len >= self.max_bytes / 8;
        if self.len + line.len() as u64 > self.max_bytes && (self.dirty || grown) {
            self.compact().map_err(RecordError::Io)?;
        }
        if self.len + line.len() as u64 > self.max_bytes {
            return Err(RecordError::SpoolFull {
                max_bytes: self.max_bytes,
            });
        }
        self.append(&line).map_err(RecordError::Io)?;
        self.pending.add(group, self.window);
        Ok(self.written)
    }

    /// The file to fsync for group commit and the position that covers, or
    /// `None` when everything up to `position` is already durable.
    pub(crate) fn sync_target(&self, position: u64) -> Option<(Arc<File>, u64)> {
        if self.durable >= position {
            return None;
        }
        let storage = self.storage.as_ref()?;
        Some((storage.file.clone(), self.written))
    }

    /// Records that everything up to `position` is on disk.
    pub(crate) fn mark_durable(&mut self, position: u64) {
        self.durable = self.durable.max(position);
    }

    /// Marks the spool failed (an fsync failed: what is on disk is in doubt).
    pub(crate) fn fail(&mut self) {
        self.failed = true;
    }

    /// Fsyncs what was appended since the last sync.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        if let Some(storage) = &self.storage {
            storage.file.sync_data()?;
        }
        self.unsynced = false;
        self.durable = self.written;
        Ok(())
    }

    /// Turns every pending group into units with fresh idempotency keys and
    /// makes that durable — before any of them is sent. Returns how many units
    /// it made.
    pub(crate) fn convert(&mut self, batch: bool) -> io::Result<usize> {
        if self.pending.is_empty() || self.failed {
            return Ok(0);
        }
        let mut next = self.next_unit;
        let new = units(self.pending.iter().cloned().collect(), batch, &mut next);
        let line = encode(&Line::Convert { units: new.clone() });
        let written = self.append(&line).and_then(|()| self.sync());
        if let Err(error) = written {
            // Unknown whether the conversion is on disk: sending these units
            // could later be followed by a replay under other keys.
            self.failed = true;
            return Err(error);
        }
        self.pending.take();
        let count = new.len();
        for unit in new {
            self.units.insert(unit.id, unit);
        }
        self.next_unit = next;
        self.dirty = true;
        Ok(count)
    }

    /// Unit `id` is done. The line is not fsynced: should it be lost, the unit
    /// is sent again with the same key and the server answers it from memory.
    pub(crate) fn ack(&mut self, id: u64) -> io::Result<()> {
        if self.units.remove(&id).is_none() {
            return Ok(());
        }
        self.dirty = true;
        self.append(&encode(&Line::Ack { id }))
    }

    /// Batch unit `id` goes out record by record from now on; durable before
    /// the first of its records is sent alone.
    pub(crate) fn split(&mut self, id: u64) -> io::Result<()> {
        let Some(unit) = self.units.get_mut(&id) else {
            return Ok(());
        };
        if unit.split {
            return Ok(());
        }
        unit.split = true;
        let written = self
            .append(&encode(&Line::Split { id }))
            .and_then(|()| self.sync());
        if written.is_err() {
            self.failed = true;
        }
        written
    }

    /// Compacts the log if that is worth it: it is large and may hold dead or
    /// coalescable entries, or nothing at all is pending and it is not small.
    pub(crate) fn maybe_compact(&mut self) -> io::Result<()> {
        if self.compaction_worthwhile() {
            self.compact()?;
        }
        Ok(())
    }

    fn compaction_worthwhile(&self) -> bool {
        if self.failed {
            return false;
        }
        let threshold = COMPACT_AT.min(self.max_bytes / 2);
        if self.is_idle() {
            self.len >= COMPACT_IDLE_AT
        } else {
            self.len >= threshold && (self.dirty || self.len - self.compacted_len >= threshold / 2)
        }
    }

    /// Whether [`sync`](Self::sync) or [`maybe_compact`](Self::maybe_compact)
    /// has anything to do.
    pub(crate) fn needs_tidying(&self) -> bool {
        (self.unsynced && !self.failed) || self.compaction_worthwhile()
    }

    /// Rewrites the log with only what is pending (`docs/design.md#spool-format`,
    /// compaction).
    fn compact(&mut self) -> io::Result<()> {
        let bytes = self.snapshot();
        if let Some(storage) = &mut self.storage {
            let temporary = sibling(&storage.path, ".tmp");
            let _ = fs::remove_file(&temporary);
            let rewrite = || -> io::Result<File> {
                let mut file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .open(&temporary)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                fs::rename(&temporary, &storage.path)?;
                Ok(file)
            };
            let file = match rewrite() {
                Ok(file) => file,
                Err(error) => {
                    let _ = fs::remove_file(&temporary);
                    return Err(error);
                }
            };
            storage.file = Arc::new(file);
            // Until the directory is synced the old log may come back after a
            // power loss; it describes the same state, so that is harmless.
            sync_parent(&storage.path)?;
        }
        self.len = bytes.len() as u64;
        self.compacted_len = self.len;
        self.durable = self.written;
        self.unsynced = false;
        self.dirty = false;
        Ok(())
    }

    /// The log a compaction writes: the header, the units, then what is pending.
    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = encode(&Line::Header { v: VERSION });
        if !self.units.is_empty() {
            bytes.extend(encode(&Line::Convert {
                units: self.units.values().cloned().collect(),
            }));
        }
        for group in self.pending.iter() {
            bytes.extend(encode(&Line::Record(group.clone())));
        }
        bytes
    }

    /// Syncs, compacts if worthwhile and releases the log and its lock.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.closed = true;
        let result = if self.failed {
            Ok(())
        } else if self.is_idle() && self.len > self.compacted_len {
            self.compact()
        } else {
            self.sync().and_then(|()| self.maybe_compact())
        };
        self.storage = None;
        result
    }

    /// The pending units, in order.
    pub(crate) fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    pub(crate) fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Recorded values not yet delivered (pending groups and unit records).
    pub(crate) fn undelivered(&self) -> u64 {
        self.pending.values()
            + self
                .units
                .values()
                .map(|unit| unit.counts.iter().sum::<u64>())
                .sum::<u64>()
    }

    /// Nothing is pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.units.is_empty()
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }

    /// Where rejected usage is written: `<spool>.rejected`.
    pub(crate) fn rejected_path(&self) -> Option<PathBuf> {
        self.storage
            .as_ref()
            .map(|storage| sibling(&storage.path, ".rejected"))
    }
}

/// Fsyncs the directory holding `path`, so that a created or renamed file is
/// found after a power loss.
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use kinde_meter_wire::MeterTypeCode;

    use super::super::pending::tests::group;
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);
    const MAX: u64 = 1 << 20;

    fn delta(agreement: &str, value: &str) -> Group {
        group(
            agreement,
            MeterTypeCode::Delta,
            value,
            "2025-01-01T00:00:00Z",
        )
    }

    /// Pending groups as (agreement, value); units as (id, key, values).
    type State = (Vec<(String, String)>, Vec<(u64, String, Vec<String>)>);

    fn state(spool: &Spool) -> State {
        let groups = spool
            .pending()
            .iter()
            .map(|g| (g.agreement.clone(), g.value.to_string()))
            .collect();
        let units = spool
            .units()
            .map(|u| {
                (
                    u.id,
                    u.key.clone(),
                    u.records.iter().map(|r| r.meter_value.clone()).collect(),
                )
            })
            .collect();
        (groups, units)
    }

    #[test]
    fn a_reopened_spool_has_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        spool.record(delta("agreement_a", "1.5")).unwrap();
        spool.record(delta("agreement_b", "2")).unwrap();
        assert_eq!(spool.convert(false).unwrap(), 2);
        spool.record(delta("agreement_a", "3")).unwrap();
        let first = spool.units().next().unwrap().id;
        spool.ack(first).unwrap();
        spool.record(delta("agreement_a", "0.25")).unwrap();
        let before = state(&spool);
        assert_eq!(before.0, [("agreement_a".to_owned(), "3.25".to_owned())]);
        assert_eq!(before.1.len(), 1);
        drop(spool);

        let spool = Spool::open(&path, MAX, WINDOW).unwrap();
        assert_eq!(state(&spool), before, "same units, same keys, same groups");
        assert_eq!(spool.undelivered(), 3);
    }

    #[test]
    fn a_spool_is_locked_by_one_reporter_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        assert!(matches!(
            Spool::open(&path, MAX, WINDOW),
            Err(ReporterError::SpoolInUse { .. })
        ));
        spool.close().unwrap();
        Spool::open(&path, MAX, WINDOW).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        spool.record(delta("agreement_a", "1")).unwrap();
        spool.record(delta("agreement_a", "2")).unwrap();
        drop(spool);
        let full = fs::read(&path).unwrap();
        for cut in [1, 5, 20] {
            fs::write(&path, &full[..full.len() - cut]).unwrap();
            let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
            assert_eq!(
                state(&spool).0,
                [("agreement_a".to_owned(), "1".to_owned())],
                "cut {cut}"
            );
            // Appending after the cut continues a valid log.
            spool.record(delta("agreement_a", "5")).unwrap();
            drop(spool);
            let spool = Spool::open(&path, MAX, WINDOW).unwrap();
            assert_eq!(
                state(&spool).0,
                [("agreement_a".to_owned(), "6".to_owned())]
            );
            drop(spool);
        }
    }

    #[test]
    fn corruption_before_valid_lines_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        spool.record(delta("agreement_a", "1")).unwrap();
        spool.record(delta("agreement_a", "2")).unwrap();
        drop(spool);
        let text = fs::read_to_string(&path).unwrap();
        let corrupted = text.replacen("\"v\":\"1\"", "\"v\":\"7\"", 1);
        assert_ne!(text, corrupted);
        fs::write(&path, corrupted).unwrap();
        match Spool::open(&path, MAX, WINDOW) {
            Err(ReporterError::SpoolCorrupt {
                line: 2, reason, ..
            }) => {
                assert!(reason.contains("checksum"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_spool_refuses_records_and_compaction_frees_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let line = encode(&Line::Record(delta("agreement_0", "1"))).len() as u64;
        let header = encode(&Line::Header { v: VERSION }).len() as u64;
        let max = header + 3 * line + line / 2;
        let mut spool = Spool::open(&path, max, WINDOW).unwrap();
        for i in 0..3 {
            spool.record(delta(&format!("agreement_{i}"), "1")).unwrap();
        }
        let full = spool.record(delta("agreement_3", "1")).unwrap_err();
        assert!(matches!(full, RecordError::SpoolFull { max_bytes } if max_bytes == max));
        assert_eq!(spool.undelivered(), 3, "the refused record is not kept");

        // Deliver everything: the acknowledged units are compacted away.
        spool.convert(false).unwrap();
        let ids: Vec<u64> = spool.units().map(|u| u.id).collect();
        for id in ids {
            spool.ack(id).unwrap();
        }
        spool.record(delta("agreement_3", "1")).unwrap();
        assert_eq!(spool.len(), header + line, "compacted to make room");
        assert_eq!(fs::metadata(&path).unwrap().len(), header + line);
    }

    #[test]
    fn a_hot_key_that_coalesces_never_fills_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, 4096, WINDOW).unwrap();
        for _ in 0..1000 {
            spool.record(delta("agreement_a", "1")).unwrap();
        }
        assert!(spool.len() <= 4096);
        assert_eq!(spool.undelivered(), 1000);
        drop(spool);
        let spool = Spool::open(&path, 4096, WINDOW).unwrap();
        assert_eq!(spool.undelivered(), 1000);
        assert_eq!(
            state(&spool).0,
            [("agreement_a".to_owned(), "1000".to_owned())]
        );
    }

    #[test]
    fn closing_an_idle_spool_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        spool.record(delta("agreement_a", "1")).unwrap();
        spool.convert(false).unwrap();
        let id = spool.units().next().unwrap().id;
        spool.ack(id).unwrap();
        spool.close().unwrap();
        let header = encode(&Line::Header { v: VERSION }).len() as u64;
        assert_eq!(fs::metadata(&path).unwrap().len(), header);
        assert!(matches!(
            spool.record(delta("agreement_a", "1")),
            Err(RecordError::Closed)
        ));
    }

    #[test]
    fn compaction_keeps_units_keys_splits_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.spool");
        let mut spool = Spool::open(&path, MAX, WINDOW).unwrap();
        for i in 0..5 {
            spool.record(delta(&format!("agreement_{i}"), "1")).unwrap();
        }
        spool.convert(true).unwrap();
        let id = spool.units().next().unwrap().id;
        spool.split(id).unwrap();
        spool.record(delta("agreement_9", "2")).unwrap();
        spool.compact().unwrap();
        let before = state(&spool);
        drop(spool);
        let spool = Spool::open(&path, MAX, WINDOW).unwrap();
        assert_eq!(state(&spool), before);
        assert!(spool.units().next().unwrap().split);
        assert!(!sibling(&path, ".tmp").exists());
    }

    #[test]
    fn a_memory_spool_counts_bytes_too() {
        let mut spool = Spool::memory(400, WINDOW);
        spool.record(delta("agreement_a", "1")).unwrap();
        let error = loop {
            if let Err(error) = spool.record(delta("agreement_b", "1")) {
                break error;
            }
        };
        assert!(matches!(error, RecordError::SpoolFull { .. }));
        assert!(spool.rejected_path().is_none());
    }

    #[test]
    fn checksums_are_crc32_ieee_and_lines_of_earlier_spools_still_read() {
        // The check value of CRC-32/IEEE (zip, PNG), as the format documents.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        // Lines as the first spool version wrote them, byte for byte.
        assert!(matches!(
            decode(br#"8f76f92d {"t":"h","v":1}"#),
            Ok(Line::Header { v: 1 })
        ));
        assert!(matches!(
            decode(br#"e48c593a {"t":"k","id":7}"#),
            Ok(Line::Ack { id: 7 })
        ));
        assert_eq!(
            encode(&Line::Ack { id: 7 }),
            b"e48c593a {\"t\":\"k\",\"id\":7}\n"
        );
        assert!(decode(br#"e48c593b {"t":"k","id":7}"#).is_err());
    }
}
