//! The JSON log lines of `kinde-meter serve` (`--log-format json`), written
//! straight into the line's bytes.
//!
//! The same lines, byte for byte, as tracing-subscriber's JSON formatter with
//! `.flatten_event(true).with_current_span(true).with_span_list(false)` (the
//! unit tests below compare the two): `timestamp`, `level`, the event's
//! fields in the order they were recorded, `target`, then `span` with the
//! current span's fields sorted by name and its `name`
//! (`docs/operations.md#logs`). What it does not do that the formatter did: store a span's fields as
//! a JSON string and parse it again for every line written inside the span,
//! put every value through serde, and format the timestamp into a `String` of
//! its own. The request line cost ~28 K instructions of a check's ~105 K
//! (bench/HISTORY.md).

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt::{self, Write as _},
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context, registry::LookupSpan};

/// The layer writing each event as one JSON line to `make_writer`.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        JsonLayer { make_writer }
    }
}

/// A span's fields, in its extensions: `"name":value` pairs sorted by name
/// and separated by commas, without braces, ready to copy into a line.
struct SpanFields(Vec<u8>);

/// Lines longer than this do not keep their buffer's memory after writing.
const KEPT_LINE_CAPACITY: usize = 64 * 1024;

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            // Values formatted before the span's extensions are locked: a
            // `Debug` that logs does not find them locked.
            let fields = SpanFields::of(|visitor| attrs.record(visitor));
            span.extensions_mut().replace(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Values formatted with the extensions unlocked, as at creation.
        let known = span
            .extensions()
            .get::<SpanFields>()
            .map(|SpanFields(fields)| fields.clone());
        let fields = match known {
            Some(known) => SpanFields(known).add(values),
            None => SpanFields::of(|visitor| values.record(visitor)),
        };
        span.extensions_mut().replace(fields);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write_line(&mut line, event, &ctx);
                if line.capacity() > KEPT_LINE_CAPACITY {
                    *line = Vec::new();
                }
            }
            // An event logged while a value of another is formatted.
            Err(_) => self.write_line(&mut Vec::new(), event, &ctx),
        });
    }
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn write_line<S>(&self, line: &mut Vec<u8>, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        // A `log` record (through the `LogTracer` that `init` installs) is
        // an event of target `log` whose fields hold the record's own target:
        // written as the formatter's `NormalizeEvent` would.
        let from_log = meta.target() == "log" && meta.fields().field("log.target").is_some();
        line.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(line, SystemTime::now());
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(level(meta.level()).as_bytes());
        line.push(b'"');
        let mut fields = EventFields {
            line: &mut *line,
            failed: false,
            from_log,
            log_target: None,
        };
        event.record(&mut fields);
        if fields.failed {
            // A value's `Debug` failed: no half line (the formatter wrote none).
            return;
        }
        let log_target = fields.log_target.take();
        line.extend_from_slice(b",\"target\":");
        string(line, log_target.as_deref().unwrap_or(meta.target()));
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = current {
            line.extend_from_slice(b",\"span\":{");
            if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>()
                && !fields.is_empty()
            {
                line.extend_from_slice(fields);
                line.push(b',');
            }
            line.extend_from_slice(b"\"name\":");
            string(line, span.name());
            line.push(b'}');
        }
        line.extend_from_slice(b"}\n");
        // Nowhere to report a failed write of the log itself.
        let _ = self.make_writer.make_writer_for(meta).write_all(line);
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// An event's fields, each `,"name":value`, as tracing-serde's map visitor
/// writes them: strings, numbers and booleans as themselves, anything else
/// (128-bit integers, bytes, errors, `?` and `%` values) as the string of its
/// `Debug`.
struct EventFields<'a> {
    line: &'a mut Vec<u8>,
    failed: bool,
    from_log: bool,
    /// A `log` record's `log.target`, kept for the line's `target`.
    log_target: Option<String>,
}

impl EventFields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        if self.failed {
            return false;
        }
        self.line.push(b',');
        string(self.line, field.name());
        self.line.push(b':');
        true
    }
}

impl Visit for EventFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            float(self.line, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            integer(self.line, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            integer(self.line, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.line
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.from_log && field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        if self.key(field) {
            string(self.line, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.failed = debug_string(self.line, value).is_err();
        }
    }
}

impl SpanFields {
    /// The fields that `record` visits, as tracing-subscriber's `JsonFields`
    /// keeps them: sorted by name, the last value of a name repeated.
    fn of(record: impl Fn(&mut dyn Visit)) -> SpanFields {
        let mut sorted = SortedFields {
            out: Vec::with_capacity(128),
            last: None,
            sorted: true,
        };
        record(&mut sorted);
        if sorted.sorted {
            return SpanFields(sorted.out);
        }
        // Names out of order or repeated (no span of ours): sorted in a map.
        let mut values = ValueFields(BTreeMap::new());
        record(&mut values);
        values.into_fields()
    }

    /// `values` recorded on the span after it was made (`Span::record`):
    /// rare, so the fields are parsed and sorted again.
    fn add(self, values: &Record<'_>) -> SpanFields {
        let mut object = Vec::with_capacity(self.0.len() + 2);
        object.push(b'{');
        object.extend_from_slice(&self.0);
        object.push(b'}');
        let mut fields = ValueFields(serde_json::from_slice(&object).unwrap_or_default());
        values.record(&mut fields);
        fields.into_fields()
    }
}

/// A span's fields written as they are visited, as long as their names come
/// in strictly increasing order (a span's fields are visited in the order
/// they are declared; the request span's are in order).
struct SortedFields {
    out: Vec<u8>,
    last: Option<&'static str>,
    sorted: bool,
}

impl SortedFields {
    fn key(&mut self, name: &'static str) -> bool {
        if !self.sorted {
            return false;
        }
        if self.last.is_some_and(|last| last >= name) {
            self.sorted = false;
            return false;
        }
        if self.last.is_some() {
            self.out.push(b',');
        }
        self.last = Some(name);
        string(&mut self.out, name);
        self.out.push(b':');
        true
    }
}

impl Visit for SortedFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field.name()) {
            float(&mut self.out, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field.name()) {
            integer(&mut self.out, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field.name()) {
            integer(&mut self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field.name()) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field.name()) {
            string(&mut self.out, value);
        }
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if self.key(field.name()) {
            self.out.push(b'[');
            for (i, byte) in value.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                integer(&mut self.out, *byte);
            }
            self.out.push(b']');
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(name) = debug_name(field)
            && self.key(name)
        {
            // A failing `Debug` leaves what it wrote, still a JSON string.
            let _ = debug_string(&mut self.out, value);
        }
    }
}

/// The name a `Debug` span field is kept under, as `JsonFields` does: `log.`
/// fields (a `log` record's metadata) left out, a raw identifier's `r#`
/// removed.
fn debug_name(field: &Field) -> Option<&'static str> {
    let name = field.name();
    if name.starts_with("log.") {
        None
    } else {
        Some(name.strip_prefix("r#").unwrap_or(name))
    }
}

/// A span's fields as `serde_json` values in a sorted map: tracing-subscriber's
/// `JsonVisitor`, for the rare span whose names are not in order and for
/// values recorded later.
struct ValueFields(BTreeMap<String, serde_json::Value>);

impl ValueFields {
    fn into_fields(self) -> SpanFields {
        let mut out = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"{}".to_vec());
        // Without the braces.
        out.pop();
        out.remove(0);
        SpanFields(out)
    }
}

impl Visit for ValueFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(name) = debug_name(field) {
            self.0.insert(name.to_owned(), format!("{value:?}").into());
        }
    }
}

/// `value` as serde_json writes an `f64` (its serializer straight into the
/// line: shortest round-trip digits, `null` for NaN and infinities).
fn float(out: &mut Vec<u8>, value: f64) {
    // Writing to a `Vec` does not fail.
    let _ = serde_json::to_writer(out, &value);
}

/// An integer as serde_json writes it.
fn integer(out: &mut Vec<u8>, value: impl serde::Serialize) {
    let _ = serde_json::to_writer(out, &value);
}

/// `value` as a JSON string.
fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escaped(out, value);
    out.push(b'"');
}

/// The `Debug` of `value` as a JSON string, escaped as it is written.
fn debug_string(out: &mut Vec<u8>, value: &dyn fmt::Debug) -> fmt::Result {
    out.push(b'"');
    let written = write!(Escaping(out), "{value:?}");
    out.push(b'"');
    written
}

/// A `fmt::Write` escaping what it is given for a JSON string.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escaped(self.0, s);
        Ok(())
    }
}

/// Escapes as serde_json does: `"` and `\` with a backslash, control
/// characters as `\b \t \n \f \r` or `\u00XX`, everything else (UTF-8
/// included) as it is. A value with nothing to escape (the usual: paths,
/// ids, names) is checked eight bytes at a time and copied whole.
fn escaped(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if !any_needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    // Bytes before `start` are written.
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..at]);
        start = at + 1;
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(byte >> 4) as usize],
                HEX[(byte & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether a byte of `bytes` needs escaping: eight at a time, the last
/// (partial) eight overlapping the word before.
fn any_needs_escape(bytes: &[u8]) -> bool {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        return bytes.iter().any(|&byte| ESCAPE[byte as usize] != 0);
    }
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if needs_escape(word(at)) {
            return true;
        }
        at += 8;
    }
    at < bytes.len() && needs_escape(word(bytes.len() - 8))
}

/// Whether one of the 8 bytes of `word` is below 0x20, `"` or `\` (the
/// classic "has a zero byte" and "has a byte less than" bit tricks: exact as
/// a yes or no).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * b'"' as u64);
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * b'\\' as u64);
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH != 0
}

/// For each byte, the letter of its escape (`u` for `\u00XX`), or 0.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// `now` as tracing-subscriber's `SystemTime` timer writes it, in UTC with
/// microseconds: `2026-12-06T11:00:32.484980Z`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let (secs, nanos) = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_nanos()),
        Err(error) => {
            let before = error.duration();
            match (before.as_secs() as i64, before.subsec_nanos()) {
                (secs, 0) => (-secs, 0),
                (secs, nanos) => (-secs - 1, 1_000_000_000 - nanos),
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400) as u32;
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let micros = nanos / 1_000;
    if !(0..=9999).contains(&year) {
        // As the timer writes years it cannot write in 4 digits.
        let year = if year > 9999 {
            format!("+{year}")
        } else {
            format!("{year:05}")
        };
        let _ = write!(
            Escaping(out),
            "{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        );
        return;
    }
    let year = year as u32;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, hour);
    digits(14, 2, minute);
    digits(17, 2, second);
    digits(20, 6, micros);
    out.extend_from_slice(&text);
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A `MakeWriter` whose bytes the test reads.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The lines `events` logs through [`JsonLayer`].
    fn ours(events: impl Fn()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(buffer.clone()));
        tracing::subscriber::with_default(subscriber, events);
        buffer.text()
    }

    /// The lines `events` logs through tracing-subscriber's JSON formatter,
    /// set up as `serve` set it up before [`JsonLayer`].
    fn theirs(events: impl Fn()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(buffer.clone())
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        buffer.text()
    }

    /// `line` with its timestamp's value replaced by `T`, after checking it
    /// has the timer's shape (`2026-12-06T11:00:32.484980Z`).
    fn without_timestamp(line: &str) -> String {
        let rest = line
            .strip_prefix(r#"{"timestamp":""#)
            .unwrap_or_else(|| panic!("no timestamp first: {line}"));
        let (stamp, rest) = rest.split_at(27);
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
        assert_eq!(shape, "0000-00-00T00:00:00.000000Z", "{line}");
        format!(r#"{{"timestamp":"T{rest}"#)
    }

    /// The keys of a JSON object in the order they are written.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
            struct KeysVisitor;
            impl<'de> Visitor<'de> for KeysVisitor {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(KeysVisitor)
        }
    }

    fn keys(line: &str) -> Vec<String> {
        serde_json::from_str::<Keys>(line).unwrap().0
    }

    /// Asserts that `events` logs the same lines through both: the same JSON
    /// values, keys in the same order, and the same bytes but for the time.
    fn assert_same_lines(events: impl Fn()) -> Vec<String> {
        let (ours, theirs) = (ours(&events), theirs(&events));
        let (ours, theirs): (Vec<&str>, Vec<&str>) =
            (ours.lines().collect(), theirs.lines().collect());
        assert_eq!(
            ours.len(),
            theirs.len(),
            "ours:\n{ours:#?}\ntheirs:\n{theirs:#?}"
        );
        assert!(!ours.is_empty());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            let mut ours_value: Value =
                serde_json::from_str(ours).unwrap_or_else(|e| panic!("not JSON ({e}): {ours}"));
            let mut theirs_value: Value = serde_json::from_str(theirs).unwrap();
            ours_value["timestamp"] = Value::Null;
            theirs_value["timestamp"] = Value::Null;
            assert_eq!(
                ours_value, theirs_value,
                "\nours:   {ours}\ntheirs: {theirs}"
            );
            assert_eq!(
                keys(ours),
                keys(theirs),
                "\nours:   {ours}\ntheirs: {theirs}"
            );
            assert_eq!(
                without_timestamp(ours),
                without_timestamp(theirs),
                "\nours:   {ours}\ntheirs: {theirs}"
            );
        }
        ours.iter().map(|line| (*line).to_owned()).collect()
    }

    const NEEDS_ESCAPES: &str = "quote \" backslash \\ slash / newline \n tab \t cr \r \
         backspace \u{8} formfeed \u{c} bell \u{7} nul \0 unit \u{1f} del \u{7f} \
         é ü 😀 \u{2028} end";

    #[test]
    fn the_request_line_is_the_formatters_in_the_documented_order() {
        let lines = assert_same_lines(|| {
            for client_id in [Some("kinde-meter-demo"), None] {
                let method = http_method();
                let latency_ms = 3_812.0 / 1000.0;
                tracing::info!(
                    target: "kinde_meter::request",
                    method = %method,
                    route = "/api/v1/billing/meter_usage",
                    path = "/api/v1/billing/meter_usage",
                    status = 200u16,
                    latency_ms,
                    client_id,
                    request_id = Some("8d1c2f3e-0b5a-4c37-9e61-3f0d2a7c5b14"),
                );
            }
        });
        assert_eq!(
            keys(&lines[0]),
            [
                "timestamp",
                "level",
                "method",
                "route",
                "path",
                "status",
                "latency_ms",
                "client_id",
                "request_id",
                "target"
            ]
        );
        assert_eq!(
            without_timestamp(&lines[0]),
            r#"{"timestamp":"T","level":"INFO","method":"POST","route":"/api/v1/billing/meter_usage","path":"/api/v1/billing/meter_usage","status":200,"latency_ms":3.812,"client_id":"kinde-meter-demo","request_id":"8d1c2f3e-0b5a-4c37-9e61-3f0d2a7c5b14","target":"kinde_meter::request"}"#
        );
        // An absent Option is no key at all.
        assert!(!lines[1].contains("client_id"), "{}", lines[1]);
    }

    /// A `Display` value as the request line's method is (`%method`).
    fn http_method() -> impl fmt::Display {
        struct Post;
        impl fmt::Display for Post {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("POST")
            }
        }
        Post
    }

    #[test]
    fn strings_needing_escapes_are_the_formatters() {
        #[derive(Debug)]
        #[allow(dead_code)] // Read by `Debug` only.
        struct Quoted {
            text: &'static str,
            number: i32,
        }
        let lines = assert_same_lines(|| {
            tracing::info!("plain message");
            tracing::warn!(
                text = NEEDS_ESCAPES,
                "with {} and \"quotes\" \\ {}",
                "args",
                NEEDS_ESCAPES
            );
            tracing::info!(shown = %NEEDS_ESCAPES, debugged = ?NEEDS_ESCAPES);
            tracing::error!(value = ?Quoted { text: NEEDS_ESCAPES, number: -3 }, pretty = format_args!("{:#?}", Quoted { text: "x", number: 1 }));
            tracing::info!(target: "a \"target\" \\ \n", "odd target");
            tracing::info!(r#type = "raw identifier", "quoted \"field\" = 1");
            tracing::info!(message = NEEDS_ESCAPES);
        });
        // Valid UTF-8 kept as it is, control characters as \uXXXX.
        assert!(lines[1].contains("é ü 😀 \u{2028} end"), "{}", lines[1]);
        assert!(
            lines[1].contains(
                r#"nul \u0000 unit \u001f del \u{7f}"#.replace(r"\u{7f}", "\u{7f}").as_str()
            ),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it_wherever_it_is() {
        let mut text = String::new();
        for c in (0u32..0x250)
            .chain([0x2028, 0x1f600])
            .filter_map(char::from_u32)
        {
            text.push(c);
        }
        // Each character at each offset of the 8-byte words, amid clean bytes.
        for offset in 0..16 {
            for c in text.chars() {
                let value = format!("{}{c}{}", "a".repeat(offset), "é".repeat(offset % 5));
                let mut out = Vec::new();
                string(&mut out, &value);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&value).unwrap()
                );
            }
        }
        let mut out = Vec::new();
        string(&mut out, &text);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&text).unwrap()
        );
    }

    #[test]
    fn numbers_floats_booleans_and_other_values_are_the_formatters() {
        assert_same_lines(|| {
            tracing::error!(
                count = 3u64,
                negative = -7i64,
                max = u64::MAX,
                min = i64::MIN,
                zero = 0u8,
                small = -5i8
            );
            tracing::warn!(wide = 1u128 << 100, wide_negative = -(1i128 << 100));
            tracing::debug!(
                latency_ms = 3.812,
                tenth = 0.1,
                third = 1.0 / 3.0,
                big = 1e21,
                bigger = 1.5e300,
                tiny = 1e-7,
                smallest = f64::MIN_POSITIVE,
                denormal = 5e-324
            );
            tracing::debug!(
                zero = 0.0,
                negative_zero = -0.0,
                whole = 2.0,
                million = 1e6,
                nan = f64::NAN,
                inf = f64::INFINITY,
                negative_inf = f64::NEG_INFINITY,
                single = 0.1f32
            );
            tracing::trace!(yes = true, no = false);
            tracing::info!(bytes = &b"\x00\x01hi\xff"[..]);
            let error = io::Error::other("disk \"full\"");
            tracing::warn!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
            let present: Option<u64> = Some(7);
            let absent: Option<&str> = None;
            tracing::info!(present, absent, after = "absent left no key");
            tracing::info!(duplicate = 1u64, duplicate = "twice");
        });
    }

    #[test]
    fn lines_in_spans_carry_the_current_spans_fields_as_the_formatter() {
        let lines = assert_same_lines(|| {
            tracing::info!("outside any span");
            let request = tracing::info_span!(
                "request",
                method = %"GET",
                path = "/api/v1/\"quoted\"\\path",
                request_id = "id-1"
            );
            request.in_scope(|| {
                tracing::info!("in the request");
                // Names out of order, every kind of value: sorted as the
                // formatter sorts them.
                let inner = tracing::debug_span!(
                    "inner",
                    zeta = 1u64,
                    alpha = NEEDS_ESCAPES,
                    beta = 2.5,
                    tenth = 0.1,
                    flag = true,
                    negative = -3i64,
                    shown = ?NEEDS_ESCAPES,
                    wide = 1u128 << 100,
                    bytes = &b"ab"[..],
                    r#type = ?"raw"
                );
                inner.in_scope(|| tracing::info!(field = 1, "nested"));
                tracing::info!(parent: &inner, "explicit parent");
                tracing::info!(parent: None, "explicit root, still in the request");
                tracing::info!(parent: &request, "the request again");
            });
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::info!("in an empty span"));
            let nan = tracing::info_span!("floats", nan = f64::NAN, big = 1e21, tiny = 1e-7);
            nan.in_scope(|| tracing::info!("floats in a span"));
            let later = tracing::info_span!(
                "later",
                a = 1u64,
                m = tracing::field::Empty,
                z = tracing::field::Empty
            );
            later.in_scope(|| tracing::info!("before record"));
            later.record("z", "recorded \"later\"");
            later.in_scope(|| tracing::info!("after one record"));
            later.record("m", 2.5);
            later.record("a", "replaced");
            later.in_scope(|| tracing::info!("after more records"));
            let unset = tracing::info_span!("unset", only = tracing::field::Empty);
            unset.in_scope(|| tracing::info!("no value yet"));
            unset.record("only", 1u64);
            unset.in_scope(|| tracing::info!("a value at last"));
        });
        assert!(!lines[0].contains("\"span\""), "{}", lines[0]);
        assert!(
            lines[1].ends_with(r#""target":"kinde_meter::logging::json::tests","span":{"method":"GET","path":"/api/v1/\"quoted\"\\path","request_id":"id-1","name":"request"}}"#),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn a_value_whose_debug_logs_neither_locks_up_nor_spoils_the_line() {
        /// Logs (in the current span) while it is formatted.
        struct Logging;
        impl fmt::Debug for Logging {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                tracing::info!("logged while formatting");
                f.write_str("logging")
            }
        }
        // Ours only: with tracing-subscriber's formatter this test never
        // finishes. (Under `with_default`, tracing drops the events logged
        // while one is dispatched; under the process's global subscriber, as
        // in `serve`, they are written, each in a buffer of its own.)
        let lines = ours(|| {
            let span =
                tracing::info_span!("outer", value = ?Logging, later = tracing::field::Empty);
            span.in_scope(|| {
                tracing::info!(value = ?Logging, "outer line");
                span.record("later", tracing::field::debug(Logging));
                tracing::info!("after the record");
            });
        });
        let lines: Vec<Value> = lines
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let messages: Vec<&str> = lines
            .iter()
            .map(|line| line["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["outer line", "after the record"]);
        assert_eq!(lines[0]["value"], "logging", "{lines:#?}");
        assert_eq!(lines[0]["span"]["value"], "logging", "{lines:#?}");
        assert_eq!(lines[1]["span"]["later"], "logging", "{lines:#?}");
    }

    #[test]
    fn log_records_have_their_own_target() {
        // As tracing-log's `LogTracer` makes them: target `log`, the
        // record's own in `log.target` (tracing-subscriber's `NormalizeEvent`
        // writes that one).
        let lines = ours(|| {
            tracing::event!(
                target: "log",
                Level::WARN,
                {
                    log.target = "tokio_postgres::connection",
                    log.module_path = "tokio_postgres::connection",
                    log.file = "src/connection.rs",
                    log.line = 42u64,
                },
                "a \"notice\""
            );
            tracing::info!(target: "log", "not a log record");
        });
        let lines: Vec<Value> = lines
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["target"], "tokio_postgres::connection");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["message"], "a \"notice\"");
        assert_eq!(lines[0]["log.line"], 42);
        assert_eq!(lines[1]["target"], "log");
    }

    #[test]
    fn timestamps_are_the_timers() {
        let at = |secs: i64, nanos: u32| {
            let time = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                    + Duration::from_nanos(nanos.into())
            };
            let mut out = Vec::new();
            timestamp(&mut out, time);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            at(1_796_555_432, 484_980_123),
            "2026-12-06T11:10:32.484980Z"
        );
        assert_eq!(at(951_782_400, 999), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59.000000Z");
        assert_eq!(at(-1, 500_000_000), "1969-12-31T23:59:59.500000Z");
        assert_eq!(
            at(253_402_300_799, 999_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(at(253_402_300_800, 0), "+10000-01-01T00:00:00.000000Z");
        // Every day from 1900 to 2200 against jiff's calendar.
        for day in -25_567..84_000 {
            let date = jiff::Timestamp::from_second(day * 86_400)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date();
            assert_eq!(
                civil_from_days(day),
                (
                    i64::from(date.year()),
                    date.month() as u32,
                    date.day() as u32
                ),
                "{date}"
            );
        }
        // The timer's own, now.
        let line = ours(|| tracing::info!("now"));
        without_timestamp(&line);
    }
}
