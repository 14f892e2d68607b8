//! Reading an import file row by row, in constant memory: CSV (a header row
//! naming the request fields) or NDJSON (one request object per line), each
//! row parsed by [`super::parse`] (docs/import-export.md#files).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};

use super::parse::{Column, csv_row, ndjson_line};
pub use super::parse::{IDEMPOTENCY_KEY_FIELD, Parsed, Reason};
use super::tee::{Tee, skip_blank_and_comment_lines};

/// The format of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, with a header row of field names.
    Csv,
    /// One JSON object per line (also `.jsonl`).
    Ndjson,
}

impl Format {
    /// The format `path`'s extension names: `.csv`, `.ndjson` or `.jsonl`.
    pub fn of_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

/// The request fields a CSV header may name, the three required first.
const FIELDS: [&str; 5] = [
    "customer_agreement_id",
    "billing_feature_code",
    "meter_value",
    "meter_usage_timestamp",
    "meter_type_code",
];
const REQUIRED_FIELDS: usize = 3;

/// Lines starting with this are comments in both formats: the reject file
/// writes each row's reason so, and can be imported again once fixed.
pub const COMMENT: u8 = b'#';

/// One row of the file.
#[derive(Debug)]
pub struct Row {
    /// The line the row starts on, from 1.
    pub line: u64,
    /// The row exactly as in the file (for the reject file).
    pub raw: Vec<u8>,
    /// The record, or why it is not one.
    pub parsed: Result<Parsed, Reason>,
}

/// An open import file.
pub struct Source {
    rows: Rows,
    header: Vec<u8>,
}

enum Rows {
    Csv {
        reader: csv::Reader<Tee<File>>,
        columns: Vec<Column>,
        record: csv::ByteRecord,
    },
    Ndjson {
        reader: BufReader<File>,
        line: u64,
        offset: u64,
        buffer: Vec<u8>,
    },
}

impl Source {
    /// Opens `path` as `format`; for CSV, reads and checks the header.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or its CSV header names an unknown or
    /// repeated column or lacks a required one.
    pub fn open(path: &Path, format: Format) -> anyhow::Result<Source> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        match format {
            Format::Csv => Source::csv(file),
            Format::Ndjson => Ok(Source {
                rows: Rows::Ndjson {
                    reader: BufReader::with_capacity(64 * 1024, file),
                    line: 0,
                    offset: 0,
                    buffer: Vec::new(),
                },
                header: Vec::new(),
            }),
        }
    }

    fn csv(file: File) -> anyhow::Result<Source> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .comment(Some(COMMENT))
            .buffer_capacity(64 * 1024)
            .from_reader(Tee::new(file));
        let names = reader
            .byte_headers()
            .context("cannot read the CSV header")?
            .clone();
        let mut columns = Vec::with_capacity(names.len());
        for name in &names {
            let name = String::from_utf8_lossy(name);
            let column = if name == IDEMPOTENCY_KEY_FIELD {
                Column::Key
            } else if let Some(field) = FIELDS.iter().find(|field| **field == name) {
                Column::Field(field)
            } else {
                bail!(
                    "the CSV header names an unknown column {name:?}; the columns are {} and optionally {IDEMPOTENCY_KEY_FIELD}",
                    FIELDS.join(", ")
                );
            };
            if columns.contains(&column) {
                bail!("the CSV header names {name:?} twice");
            }
            columns.push(column);
        }
        for required in &FIELDS[..REQUIRED_FIELDS] {
            if !columns.contains(&Column::Field(required)) {
                bail!("the CSV header lacks the column {required}");
            }
        }
        let start = names.position().map_or(0, csv::Position::byte);
        let end = reader.position().byte();
        let (_, header) = reader.get_mut().take(start, end);
        Ok(Source {
            rows: Rows::Csv {
                reader,
                columns,
                record: csv::ByteRecord::new(),
            },
            header,
        })
    }

    /// The CSV header line as in the file (empty for NDJSON).
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// How many bytes of the file have been consumed.
    pub fn offset(&self) -> u64 {
        match &self.rows {
            Rows::Csv { reader, .. } => reader.position().byte(),
            Rows::Ndjson { offset, .. } => *offset,
        }
    }

    /// The next row, `None` at the end of the file. Blank lines and comment
    /// lines are skipped.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn next_row(&mut self) -> io::Result<Option<Row>> {
        match &mut self.rows {
            Rows::Csv {
                reader,
                columns,
                record,
            } => {
                if !reader.read_byte_record(record).map_err(io::Error::other)? {
                    return Ok(None);
                }
                let start = record.position().map_or(0, csv::Position::byte);
                let end = reader.position().byte();
                let (line, raw) = reader.get_mut().take(start, end);
                let (line, raw) = skip_blank_and_comment_lines(line, raw);
                Ok(Some(Row {
                    line,
                    raw,
                    parsed: csv_row(columns, record),
                }))
            }
            Rows::Ndjson {
                reader,
                line,
                offset,
                buffer,
            } => loop {
                buffer.clear();
                let read = reader.read_until(b'\n', buffer)?;
                if read == 0 {
                    return Ok(None);
                }
                *line += 1;
                *offset += read as u64;
                let text = buffer.trim_ascii();
                if text.is_empty() || text[0] == COMMENT {
                    continue;
                }
                return Ok(Some(Row {
                    line: *line,
                    parsed: ndjson_line(text),
                    raw: std::mem::take(buffer),
                }));
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinde_meter_wire::MeterTypeCode;

    fn rows(format: Format, text: &str) -> (Source, Vec<Row>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, text).unwrap();
        let mut source = Source::open(&path, format).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = source.next_row().unwrap() {
            rows.push(row);
        }
        (source, rows)
    }

    #[test]
    fn csv_rows_keep_their_lines_and_bytes() {
        let text = "meter_value,customer_agreement_id,billing_feature_code\n\
                    1.5,agreement_a,api_calls\n\
                    # a comment\n\
                    \"2\",\"agreement_b\",\"api\ncalls\"\n\
                    x,agreement_c,api_calls\n\
                    3,agreement_d";
        let (source, rows) = rows(Format::Csv, text);
        assert_eq!(
            source.header(),
            b"meter_value,customer_agreement_id,billing_feature_code\n"
        );
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4, 6, 7]);
        assert_eq!(rows[0].raw, b"1.5,agreement_a,api_calls\n");
        assert_eq!(rows[1].raw, b"\"2\",\"agreement_b\",\"api\ncalls\"\n");
        assert_eq!(rows[3].raw, b"3,agreement_d");
        let first = rows[0].parsed.as_ref().unwrap();
        assert_eq!(first.request.meter_value, "1.5");
        assert_eq!(first.request.customer_agreement_id, "agreement_a");
        assert!(first.key.is_none());
        // The server's parser and messages.
        assert_eq!(
            rows[1].parsed.as_ref().unwrap_err().code,
            "INVALID_FIELD",
            "a code with a line break"
        );
        assert_eq!(
            rows[2].parsed.as_ref().unwrap_err().code,
            "INVALID_METER_VALUE"
        );
        let short = rows[3].parsed.as_ref().unwrap_err();
        assert_eq!(short.message, "the row has 2 fields, the header 3");
        assert_eq!(source.offset(), text.len() as u64);
    }

    #[test]
    fn csv_empty_cells_are_absent_fields_and_keys_are_checked() {
        let text = "customer_agreement_id,billing_feature_code,meter_value,meter_usage_timestamp,meter_type_code,idempotency_key\n\
                    agreement_a,api_calls,007,,,\n\
                    agreement_a,api_calls,1,2024-11-18T13:32:03+11:00,absolute,order-1\n\
                    agreement_a,api_calls,1,,,has space\n\
                    ,api_calls,1,,,\n";
        let (_, rows) = rows(Format::Csv, text);
        let plain = rows[0].parsed.as_ref().unwrap();
        assert_eq!(plain.request.meter_value, "7");
        assert_eq!(plain.request.meter_usage_timestamp, None);
        let keyed = rows[1].parsed.as_ref().unwrap();
        assert_eq!(keyed.key.as_ref().unwrap().as_str(), "order-1");
        assert_eq!(
            keyed.request.meter_usage_timestamp.as_deref(),
            Some("2024-11-18T02:32:03Z")
        );
        assert_eq!(keyed.request.meter_type_code, Some(MeterTypeCode::Absolute));
        assert!(
            rows[2]
                .parsed
                .as_ref()
                .unwrap_err()
                .message
                .contains("idempotency_key")
        );
        let missing = rows[3].parsed.as_ref().unwrap_err();
        assert_eq!(missing.code, "MISSING_FIELD");
        assert_eq!(missing.message, "customer_agreement_id is required");
    }

    #[test]
    fn csv_headers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.csv");
        for (header, complaint) in [
            (
                "customer_agreement_id,billing_feature_code,meter_valu",
                "unknown column",
            ),
            (
                "customer_agreement_id,billing_feature_code",
                "lacks the column meter_value",
            ),
            (
                "customer_agreement_id,billing_feature_code,meter_value,meter_value",
                "twice",
            ),
        ] {
            std::fs::write(&path, format!("{header}\n")).unwrap();
            let error = Source::open(&path, Format::Csv).err().unwrap().to_string();
            assert!(error.contains(complaint), "{header}: {error}");
        }
    }

    #[test]
    fn ndjson_lines_skip_blanks_and_comments() {
        let text = "{\"customer_agreement_id\":\"agreement_a\",\"billing_feature_code\":\"api_calls\",\"meter_value\":\"0.1\",\"idempotency_key\":\"k-1\"}\n\
                    \n\
                    # line 1: a reject comment\n\
                    not json\n\
                    {\"customer_agreement_id\":\"agreement_a\",\"billing_feature_code\":\"api_calls\",\"meter_value\":\"2\",\"meter_usage_timestamp\":\"2999-01-01T00:00:00Z\"}\n\
                    {\"customer_agreement_id\":\"agreement_a\",\"billing_feature_code\":\"api_calls\",\"meter_value\":\"2\",\"idempotency_key\":5}";
        let (source, rows) = rows(Format::Ndjson, text);
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 4, 5, 6]);
        let first = rows[0].parsed.as_ref().unwrap();
        assert_eq!(first.key.as_ref().unwrap().as_str(), "k-1");
        assert_eq!(rows[1].raw, b"not json\n");
        assert_eq!(rows[1].parsed.as_ref().unwrap_err().code, "INVALID_JSON");
        // The future bound is the server's to apply, at receipt.
        assert!(rows[2].parsed.is_ok());
        assert_eq!(
            rows[3].parsed.as_ref().unwrap_err().message,
            "idempotency_key must be a string"
        );
        assert_eq!(source.offset(), text.len() as u64);
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::of_path(Path::new("a.CSV")), Some(Format::Csv));
        assert_eq!(Format::of_path(Path::new("a.ndjson")), Some(Format::Ndjson));
        assert_eq!(Format::of_path(Path::new("a.jsonl")), Some(Format::Ndjson));
        assert_eq!(Format::of_path(Path::new("a.json")), None);
        assert_eq!(Format::of_path(Path::new("a")), None);
    }
}
