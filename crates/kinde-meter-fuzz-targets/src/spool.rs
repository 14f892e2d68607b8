//! The SDK's spool reader: the replay of a spool file's bytes when a
//! `UsageReporter` opens it (`kinde_sdk::fuzzing::replay_for_fuzzing`;
//! docs/design.md#spool-format).

use std::time::Duration;

use kinde_sdk::fuzzing::replay_for_fuzzing;

/// The reporter's default coalescing window.
const WINDOW: Duration = Duration::from_secs(10);

/// The first byte chooses: even, the rest is a spool file as is; odd, the rest
/// is spool entries (JSON) one per line, each given its right checksum, with
/// whatever follows the last newline left as a torn line without one.
/// Properties: replay never panics; what it keeps is whole lines, each with a
/// valid checksum, the first one a header; and the log a compaction writes of
/// the replayed state replays whole, to the same state and the same count of
/// undelivered values.
pub fn spool(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        seal(rest)
    };
    let Ok(replayed) = replay_for_fuzzing(&bytes, WINDOW) else {
        return;
    };
    check_kept(&bytes[..replayed.valid_len]);
    let compacted = &replayed.compacted;
    match replay_for_fuzzing(compacted, WINDOW) {
        Ok(again) => {
            assert_eq!(
                again.valid_len,
                compacted.len(),
                "a compacted log is not kept whole"
            );
            assert_eq!(
                String::from_utf8_lossy(&again.compacted),
                String::from_utf8_lossy(compacted),
                "compacting the compacted log changed it"
            );
            assert_eq!(
                again.undelivered, replayed.undelivered,
                "compaction changed the count"
            );
        }
        Err(error) => panic!(
            "a compacted log does not replay: {error}\n{}",
            String::from_utf8_lossy(compacted)
        ),
    }
}

/// Each line of `entries` as a spool line (`<crc32 in hex> <entry>\n`); the
/// text after the last newline is appended as it is.
pub fn seal(entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() + 64);
    let mut lines = entries.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            out.extend_from_slice(line);
            break;
        }
        out.extend_from_slice(format!("{:08x} ", crc32fast::hash(line)).as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The valid prefix: whole lines, each `<8 hex digits> <entry>` whose checksum
/// is the CRC-32 of the entry, the first a header.
fn check_kept(kept: &[u8]) {
    if kept.is_empty() {
        return;
    }
    assert_eq!(kept.last(), Some(&b'\n'), "kept a torn line");
    for (index, line) in kept[..kept.len() - 1].split(|&b| b == b'\n').enumerate() {
        let shown = String::from_utf8_lossy(line);
        assert!(
            line.len() >= 9 && line[8] == b' ',
            "line {index} kept: {shown:?}"
        );
        let stated = std::str::from_utf8(&line[..8])
            .ok()
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        assert_eq!(
            stated,
            Some(crc32fast::hash(&line[9..])),
            "line {index} kept: {shown:?}"
        );
        if index == 0 {
            let entry: serde_json::Value =
                serde_json::from_slice(&line[9..]).expect("a header is JSON");
            assert_eq!(
                entry.get("t"),
                Some(&serde_json::Value::from("h")),
                "{shown:?}"
            );
        }
    }
}
