//! A parser for the InfluxDB line protocol, as Telegraf and the InfluxDB
//! client libraries write it:
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! Lines come from the network, so every line is bounded (the `MAX_*`
//! constants), the work is linear in the line's length, and a bad line
//! becomes a [`LineError`] telling the client what was wrong and where,
//! never a panic.
//!
//! Where the InfluxDB reference leaves room, this parser chooses:
//! - Leading spaces and tabs are skipped; a line that is then empty, or
//!   starts with `#`, is ignored. One or more spaces separate the sections,
//!   and spaces or tabs may trail the line.
//! - In names (measurement, tag keys and values, field keys) a backslash
//!   escapes only the characters special there (`,` and space in a
//!   measurement; `,`, `=` and space elsewhere). Before anything else it is
//!   a literal backslash, so `\\` is two backslashes, as InfluxDB reads
//!   it. A name therefore cannot end in a backslash (it would escape the
//!   separator after it), and a backslash ending the line is refused as an
//!   incomplete escape.
//! - Names may not contain control characters; string field values may.
//! - Floats are the decimal ones InfluxDB accepts: an optional `-`, digits
//!   with at most one `.` (`1`, `1.`, `.5`), an optional exponent (`e` or
//!   `E`, an optional sign, digits). No `+` sign, hex, `_`, `NaN` or `Inf`;
//!   a value beyond f64's range is refused.
//! - A tag key written twice is refused, as InfluxDB does. A field key
//!   written twice keeps its last value, at the place it was last written.
//! - A timestamp is `-?[0-9]+`; nanoseconds are truncated toward zero.

use std::collections::HashSet;

/// The longest line accepted, in bytes, without its newline.
pub const MAX_LINE_BYTES: usize = 65_536;
/// The longest measurement, tag key, tag value or field key, in bytes once
/// unescaped.
pub const MAX_NAME_BYTES: usize = 256;
/// The most tags a line may have.
pub const MAX_TAGS: usize = 64;
/// The most fields a line may have, counted as written (before a repeated
/// key's earlier values are dropped).
pub const MAX_FIELDS: usize = 256;
/// The longest string field value, in bytes once unescaped.
pub const MAX_STRING_FIELD_BYTES: usize = 65_536;

/// How much of the offending text an error message quotes, in characters.
const QUOTE_CHARS: usize = 64;

/// Skipped before a line's measurement and allowed after its last section.
const BLANKS: [char; 2] = [' ', '\t'];

/// Timestamp precision of a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// InfluxDB 1.x spellings (`n`, `ns`, `u`, `us`, `µ`, `µs`, `ms`, `s`,
    /// `m`, `h`) and 2.x ones (`ns`, `us`, `ms`, `s`); None for anything else.
    pub fn parse(text: &str) -> Option<Precision> {
        match text {
            "n" | "ns" => Some(Precision::Nanoseconds),
            // The micro sign (U+00B5) and the Greek mu (U+03BC) look the
            // same, so clients send either.
            "u" | "us" | "\u{b5}" | "\u{b5}s" | "\u{3bc}" | "\u{3bc}s" => {
                Some(Precision::Microseconds)
            }
            "ms" => Some(Precision::Milliseconds),
            "s" => Some(Precision::Seconds),
            "m" => Some(Precision::Minutes),
            "h" => Some(Precision::Hours),
            _ => None,
        }
    }

    /// `value`, written in this precision, as Unix microseconds; None when
    /// that overflows.
    fn to_micros(self, value: i64) -> Option<i64> {
        match self {
            // Integer division truncates toward zero: the sub-microsecond
            // digits are dropped.
            Precision::Nanoseconds => Some(value / 1_000),
            Precision::Microseconds => Some(value),
            Precision::Milliseconds => value.checked_mul(1_000),
            Precision::Seconds => value.checked_mul(1_000_000),
            Precision::Minutes => value.checked_mul(60_000_000),
            Precision::Hours => value.checked_mul(3_600_000_000),
        }
    }
}

/// A field's value, typed as the line wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(String),
    Boolean(bool),
}

impl FieldValue {
    /// Numbers and booleans (1/0) as f64; None for strings.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(value) => Some(value),
            FieldValue::Integer(value) => Some(value as f64),
            FieldValue::Unsigned(value) => Some(value as f64),
            FieldValue::Boolean(value) => Some(f64::from(u8::from(value))),
            FieldValue::String(_) => None,
        }
    }
}

/// One line's point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    /// In the order written (unescaped).
    pub tags: Vec<(String, String)>,
    /// In the order written (unescaped); at least one.
    pub fields: Vec<(String, FieldValue)>,
    /// Unix microseconds, converted from the request precision (truncating
    /// sub-microsecond digits); None when the line has no timestamp.
    pub time_us: Option<i64>,
}

impl Point {
    /// The value of the tag `key`, if the point has it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The value of the field `key`, if the point has it.
    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }
}

/// Why one line was refused: `line` is 1-based; the Display text is what the
/// client is told, e.g. "line 3: invalid field value for `usage_idle`:
/// `12x`" — always naming the line and the part (measurement, tag key/value,
/// field key/value, timestamp) and quoting at most 64 characters of the
/// offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parses one line (without its newline). Ok(None) for an empty or
/// whitespace-only line or a comment (first non-space char `#`).
pub fn parse_line(
    line: &str,
    number: usize,
    precision: Precision,
) -> Result<Option<Point>, LineError> {
    let refuse = |message| LineError {
        line: number,
        message,
    };
    // Checked first, so nothing below ever works on more than the limit.
    if line.len() > MAX_LINE_BYTES {
        return Err(refuse(format!(
            "line is too long: {} bytes, the limit is {MAX_LINE_BYTES}",
            line.len()
        )));
    }
    let text = line.trim_start_matches(BLANKS);
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    parse_point(text, precision).map(Some).map_err(refuse)
}

/// Parses a whole body (lines separated by `\n`, a trailing `\r` stripped):
/// every good point with its line number, and every bad line's error, in
/// order. Never panics, whatever the input.
pub fn parse_body(body: &str, precision: Precision) -> (Vec<(usize, Point)>, Vec<LineError>) {
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in body.split('\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        match parse_line(line, number, precision) {
            Ok(Some(point)) => points.push((number, point)),
            Ok(None) => {}
            Err(error) => errors.push(error),
        }
    }
    (points, errors)
}

/// A part of a line, or the message telling the client why it is wrong.
type Parsed<T> = Result<T, String>;

/// The parts read by [`read_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    /// The bytes that end this part unless escaped, which are also the only
    /// ones a backslash escapes in it.
    fn special(self) -> &'static [u8] {
        match self {
            Part::Measurement => b", ",
            Part::TagKey | Part::TagValue | Part::FieldKey => b",= ",
        }
    }
}

/// A read position in a line. It only ever stops before an ASCII byte or at
/// the end, so slicing from it never splits a character.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// What is left of the line.
    fn rest(&self) -> &'a str {
        slice(self.text, self.pos, self.text.len())
    }

    /// What has been read so far.
    fn done(&self) -> &'a str {
        slice(self.text, 0, self.pos)
    }

    /// Steps over `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_spaces(&mut self) {
        while self.eat(b' ') {}
    }

    /// Reads up to the first byte that `stop` accepts (which must be ASCII)
    /// or the end of the line.
    fn take_until(&mut self, stop: impl Fn(u8) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.bytes().position(stop).unwrap_or(rest.len());
        self.pos += len;
        slice(rest, 0, len)
    }
}

/// `text[from..to]`. Every position this parser slices at sits before an
/// ASCII byte or at the end, so the fallback is never taken; `get` keeps
/// hostile input from ever reaching a panic all the same.
fn slice(text: &str, from: usize, to: usize) -> &str {
    text.get(from..to).unwrap_or_default()
}

/// The point on `text`, a line without its leading blanks.
fn parse_point(text: &str, precision: Precision) -> Parsed<Point> {
    let mut cur = Cursor::new(text);
    let measurement = read_name(&mut cur, Part::Measurement)?;
    if measurement.is_empty() {
        return Err(format!("missing measurement {}", location(cur.rest())));
    }
    let tags = if cur.eat(b',') {
        read_tags(&mut cur)?
    } else {
        Vec::new()
    };
    // The measurement and tags stop only at a space or the end of the line.
    cur.skip_spaces();
    if cur.at_end() {
        return Err(format!(
            "missing field set after {}: a point needs at least one field",
            quote(cur.done().trim_end())
        ));
    }
    let fields = read_fields(&mut cur)?;
    // The field set stops only at a space or the end of the line.
    cur.skip_spaces();
    let time_us = read_timestamp(&cur, precision)?;
    Ok(Point {
        measurement,
        tags,
        fields,
        time_us,
    })
}

/// Reads a measurement, tag key, tag value or field key up to its first
/// unescaped special byte (or the end of the line), unescaping it.
fn read_name(cur: &mut Cursor<'_>, part: Part) -> Parsed<String> {
    let special = part.special();
    let text = cur.text;
    let bytes = text.as_bytes();
    let start = cur.pos;
    let mut name = String::new();
    // text[copied..i] is the run not yet copied into `name`.
    let mut copied = start;
    let mut i = start;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'\\' {
            match bytes.get(i + 1) {
                Some(next) if special.contains(next) => {
                    name.push_str(slice(text, copied, i));
                    // The escaped byte starts the next run.
                    copied = i + 1;
                    i += 2;
                    continue;
                }
                // Before anything else, a backslash is itself.
                Some(_) => {}
                None => {
                    return Err(format!(
                        "incomplete escape at end of line in {}: {}",
                        part.name(),
                        quote(slice(text, start, bytes.len()))
                    ))
                }
            }
        } else if special.contains(&byte) {
            break;
        }
        i += 1;
    }
    name.push_str(slice(text, copied, i));
    cur.pos = i;
    check_name(&name, part)?;
    Ok(name)
}

fn check_name(name: &str, part: Part) -> Parsed<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{} is too long: {} bytes, the limit is {MAX_NAME_BYTES}: {}",
            part.name(),
            name.len(),
            quote(name)
        ));
    }
    if let Some(control) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{} contains a control character ({}): {}",
            part.name(),
            control.escape_unicode(),
            quote(name)
        ));
    }
    Ok(())
}

/// Reads the tag set, just after the comma that follows the measurement.
fn read_tags(cur: &mut Cursor<'_>) -> Parsed<Vec<(String, String)>> {
    let mut tags = Vec::new();
    loop {
        if tags.len() == MAX_TAGS {
            return Err(format!("too many tags: the limit is {MAX_TAGS}"));
        }
        let key = read_name(cur, Part::TagKey)?;
        if key.is_empty() {
            return Err(format!("missing tag key {}", location(cur.rest())));
        }
        if !cur.eat(b'=') {
            return Err(format!("missing `=` after tag key {}", quote(&key)));
        }
        let value_start = cur.pos;
        let value = read_name(cur, Part::TagValue)?;
        if value.is_empty() {
            return Err(format!("missing tag value for tag key {}", quote(&key)));
        }
        if cur.peek() == Some(b'=') {
            return Err(format!(
                "unescaped `=` in tag value for tag key {}: {}",
                quote(&key),
                quote(slice(cur.text, value_start, cur.text.len()))
            ));
        }
        tags.push((key, value));
        if !cur.eat(b',') {
            break;
        }
    }
    check_unique_tag_keys(&tags)?;
    Ok(tags)
}

/// A tag key written twice is refused, as InfluxDB does: a series is named
/// by its tags, and neither value is more right than the other.
fn check_unique_tag_keys(tags: &[(String, String)]) -> Parsed<()> {
    let mut seen = HashSet::with_capacity(tags.len());
    match tags.iter().find(|(key, _)| !seen.insert(key.as_str())) {
        Some((key, _)) => Err(format!("duplicate tag key {}", quote(key))),
        None => Ok(()),
    }
}

/// Reads the field set, from its first field key.
fn read_fields(cur: &mut Cursor<'_>) -> Parsed<Vec<(String, FieldValue)>> {
    let mut fields = Vec::new();
    loop {
        if fields.len() == MAX_FIELDS {
            return Err(format!("too many fields: the limit is {MAX_FIELDS}"));
        }
        let key = read_name(cur, Part::FieldKey)?;
        if key.is_empty() {
            return Err(format!("missing field key {}", location(cur.rest())));
        }
        if !cur.eat(b'=') {
            return Err(format!("missing `=` after field key {}", quote(&key)));
        }
        let value = read_field_value(cur, &key)?;
        fields.push((key, value));
        // A value ends at a comma, a space or the end of the line; only a
        // comma goes on to another field.
        if !cur.eat(b',') {
            break;
        }
    }
    Ok(keep_last_values(fields))
}

/// InfluxDB keeps the last value written for a field key; so does this, at
/// the place it was last written.
fn keep_last_values(fields: Vec<(String, FieldValue)>) -> Vec<(String, FieldValue)> {
    let keep: Vec<bool> = {
        let mut seen = HashSet::with_capacity(fields.len());
        let mut keep: Vec<bool> = fields
            .iter()
            .rev()
            .map(|(key, _)| seen.insert(key.as_str()))
            .collect();
        keep.reverse();
        keep
    };
    if keep.iter().all(|&kept| kept) {
        return fields;
    }
    fields
        .into_iter()
        .zip(keep)
        .filter_map(|(field, kept)| kept.then_some(field))
        .collect()
}

/// Reads a field value, just after its `=`.
fn read_field_value(cur: &mut Cursor<'_>, key: &str) -> Parsed<FieldValue> {
    if cur.peek() == Some(b'"') {
        return read_string_value(cur, key);
    }
    let token = cur.take_until(|byte| byte == b',' || byte == b' ');
    parse_unquoted_value(token, key)
}

/// Reads a string field value from its opening quote. Inside, `\"` and `\\`
/// are escapes and any other backslash is itself.
fn read_string_value(cur: &mut Cursor<'_>, key: &str) -> Parsed<FieldValue> {
    let text = cur.text;
    let bytes = text.as_bytes();
    let open = cur.pos;
    let mut value = String::new();
    // text[copied..i] is the run not yet copied into `value`.
    let mut copied = open + 1;
    let mut i = open + 1;
    loop {
        match bytes.get(i) {
            None => {
                return Err(format!(
                    "unterminated string field value for {}: {}",
                    quote(key),
                    quote(slice(text, open, bytes.len()))
                ))
            }
            Some(b'"') => break,
            Some(b'\\') if matches!(bytes.get(i + 1), Some(b'\\' | b'"')) => {
                value.push_str(slice(text, copied, i));
                // The escaped byte starts the next run.
                copied = i + 1;
                i += 2;
            }
            Some(_) => i += 1,
        }
    }
    value.push_str(slice(text, copied, i));
    // Past the closing quote.
    cur.pos = i + 1;
    if value.len() > MAX_STRING_FIELD_BYTES {
        return Err(format!(
            "string field value for {} is too long: {} bytes, the limit is {MAX_STRING_FIELD_BYTES}",
            quote(key),
            value.len()
        ));
    }
    match cur.peek() {
        None | Some(b',' | b' ') => Ok(FieldValue::String(value)),
        Some(_) => Err(format!(
            "unexpected text after string field value for {}: {}",
            quote(key),
            quote(cur.rest())
        )),
    }
}

/// A float, integer (`i`), unsigned (`u`) or boolean field value.
fn parse_unquoted_value(token: &str, key: &str) -> Parsed<FieldValue> {
    if token.is_empty() {
        return Err(format!("missing field value for {}", quote(key)));
    }
    if let Some(value) = parse_bool(token) {
        return Ok(FieldValue::Boolean(value));
    }
    let invalid = || format!("invalid field value for {}: {}", quote(key), quote(token));
    let out_of_range = |kind: &str| {
        format!(
            "field value for {} is out of range for {kind}: {}",
            quote(key),
            quote(token)
        )
    };
    if let Some(number) = token.strip_suffix('i') {
        if !is_integer(number.strip_prefix('-').unwrap_or(number)) {
            return Err(invalid());
        }
        // The syntax is right, so only the range can fail.
        return number
            .parse()
            .map(FieldValue::Integer)
            .map_err(|_| out_of_range("a signed 64-bit integer"));
    }
    if let Some(number) = token.strip_suffix('u') {
        if !is_integer(number) {
            return Err(invalid());
        }
        return number
            .parse()
            .map(FieldValue::Unsigned)
            .map_err(|_| out_of_range("an unsigned 64-bit integer"));
    }
    if !is_decimal_float(token) {
        return Err(invalid());
    }
    match token.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(FieldValue::Float(value)),
        Ok(_) => Err(out_of_range("a 64-bit float")),
        Err(_) => Err(invalid()),
    }
}

/// The spellings InfluxDB accepts, and no others (`tRUE` is not one).
fn parse_bool(token: &str) -> Option<bool> {
    match token {
        "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// One or more ASCII digits, no sign.
fn is_integer(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// The floats InfluxDB accepts: what Go's `strconv.ParseFloat` reads, less
/// what InfluxDB's own scan refuses before it (a `+` sign, hex, `_`, `Inf`,
/// `NaN`). Rust's `f64::from_str` reads all of these.
fn is_decimal_float(token: &str) -> bool {
    let unsigned = token.strip_prefix('-').unwrap_or(token);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    let mantissa_ok =
        digits_only(whole) && digits_only(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent
        .is_none_or(|exponent| is_integer(exponent.strip_prefix(['+', '-']).unwrap_or(exponent)));
    mantissa_ok && exponent_ok
}

/// Reads the optional timestamp, and checks nothing but blanks follows it.
fn read_timestamp(cur: &Cursor<'_>, precision: Precision) -> Parsed<Option<i64>> {
    let rest = cur.rest().trim_end_matches(BLANKS);
    if rest.is_empty() {
        return Ok(None);
    }
    let (token, after) = rest.split_at(rest.find(BLANKS).unwrap_or(rest.len()));
    if !is_integer(token.strip_prefix('-').unwrap_or(token)) {
        return Err(format!(
            "invalid timestamp (an integer is expected): {}",
            quote(token)
        ));
    }
    let out_of_range = || format!("timestamp out of range: {}", quote(token));
    let value: i64 = token.parse().map_err(|_| out_of_range())?;
    let micros = precision.to_micros(value).ok_or_else(out_of_range)?;
    let after = after.trim_start_matches(BLANKS);
    if !after.is_empty() {
        return Err(format!("unexpected text after timestamp: {}", quote(after)));
    }
    Ok(Some(micros))
}

/// Where something missing was expected: before the rest of the line, or at
/// its end.
fn location(rest: &str) -> String {
    if rest.is_empty() {
        "at end of line".to_string()
    } else {
        format!("before {}", quote(rest))
    }
}

/// `text` in backticks, cut to [`QUOTE_CHARS`] characters (an ellipsis after
/// the closing backtick says so), with control characters escaped so the
/// message stays one printable line.
fn quote(text: &str) -> String {
    let mut quoted = String::from("`");
    let mut chars = text.chars();
    for c in chars.by_ref().take(QUOTE_CHARS) {
        if c.is_control() {
            quoted.extend(c.escape_debug());
        } else {
            quoted.push(c);
        }
    }
    quoted.push('`');
    if chars.next().is_some() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use FieldValue::{Boolean, Float, Integer, Unsigned};

    /// 2023-11-14T22:13:20Z, the Telegraf examples' timestamp, in µs.
    const TELEGRAF_TIME_US: i64 = 1_700_000_000_000_000;

    fn point(line: &str) -> Point {
        point_in(line, Precision::Nanoseconds)
    }

    fn point_in(line: &str, precision: Precision) -> Point {
        match parse_line(line, 1, precision) {
            Ok(Some(point)) => point,
            other => panic!("{line:?} should be a point, got {other:?}"),
        }
    }

    /// The client's message for a bad line, as line 7.
    fn error(line: &str) -> String {
        match parse_line(line, 7, Precision::Nanoseconds) {
            Err(error) => error.to_string(),
            Ok(other) => panic!("{line:?} should be refused, got {other:?}"),
        }
    }

    fn value(text: &str) -> Result<FieldValue, String> {
        match parse_line(&format!("m x={text}"), 1, Precision::Nanoseconds) {
            Ok(Some(point)) => Ok(point.fields[0].1.clone()),
            Ok(None) => panic!("not a point"),
            Err(error) => Err(error.message),
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn fields(pairs: &[(&str, FieldValue)]) -> Vec<(String, FieldValue)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect()
    }

    fn string(text: &str) -> FieldValue {
        FieldValue::String(text.to_string())
    }

    #[test]
    fn telegraf_cpu() {
        let line = "cpu,cpu=cpu-total,host=web-1 usage_idle=97.5,usage_user=1.5,usage_system=1 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "cpu".into(),
                tags: tags(&[("cpu", "cpu-total"), ("host", "web-1")]),
                fields: fields(&[
                    ("usage_idle", Float(97.5)),
                    ("usage_user", Float(1.5)),
                    ("usage_system", Float(1.0)),
                ]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_mem() {
        let line = "mem,host=web-1 total=8349196288i,available=6117457920i,used=1963266048i,used_percent=23.51 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "mem".into(),
                tags: tags(&[("host", "web-1")]),
                fields: fields(&[
                    ("total", Integer(8_349_196_288)),
                    ("available", Integer(6_117_457_920)),
                    ("used", Integer(1_963_266_048)),
                    ("used_percent", Float(23.51)),
                ]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_disk() {
        let line = "disk,device=sda1,fstype=ext4,host=web-1,mode=rw,path=/ free=43234058240i,inodes_free=2854497i,total=62671097856i,used=16218054656i,used_percent=27.27 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "disk".into(),
                tags: tags(&[
                    ("device", "sda1"),
                    ("fstype", "ext4"),
                    ("host", "web-1"),
                    ("mode", "rw"),
                    ("path", "/"),
                ]),
                fields: fields(&[
                    ("free", Integer(43_234_058_240)),
                    ("inodes_free", Integer(2_854_497)),
                    ("total", Integer(62_671_097_856)),
                    ("used", Integer(16_218_054_656)),
                    ("used_percent", Float(27.27)),
                ]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_net() {
        let line = "net,host=web-1,interface=eth0 bytes_recv=123456789i,bytes_sent=987654u,err_in=0i 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "net".into(),
                tags: tags(&[("host", "web-1"), ("interface", "eth0")]),
                fields: fields(&[
                    ("bytes_recv", Integer(123_456_789)),
                    ("bytes_sent", Unsigned(987_654)),
                    ("err_in", Integer(0)),
                ]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_system() {
        let line = "system,host=web-1 load1=0.52,load5=0.41,load15=0.33,n_cpus=4i,uptime=123456u 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "system".into(),
                tags: tags(&[("host", "web-1")]),
                fields: fields(&[
                    ("load1", Float(0.52)),
                    ("load5", Float(0.41)),
                    ("load15", Float(0.33)),
                    ("n_cpus", Integer(4)),
                    ("uptime", Unsigned(123_456)),
                ]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_system_uptime_format() {
        let line = r#"system,host=web-1 uptime_format="1 day,  10:17" 1700000000000000000"#;
        assert_eq!(
            point(line),
            Point {
                measurement: "system".into(),
                tags: tags(&[("host", "web-1")]),
                fields: fields(&[("uptime_format", string("1 day,  10:17"))]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn telegraf_temp() {
        let line = "temp,host=web-1,sensor=coretemp_package_id_0_input temp=48 1700000000000000000";
        assert_eq!(
            point(line),
            Point {
                measurement: "temp".into(),
                tags: tags(&[("host", "web-1"), ("sensor", "coretemp_package_id_0_input")]),
                fields: fields(&[("temp", Float(48.0))]),
                time_us: Some(TELEGRAF_TIME_US),
            }
        );
    }

    #[test]
    fn escaped_line() {
        let line =
            r#"my\ measure,tag\,key=tag\=value field\ key="a \"quoted\" string, with = signs" 1"#;
        let expected = Point {
            measurement: "my measure".into(),
            tags: tags(&[("tag,key", "tag=value")]),
            fields: fields(&[("field key", string(r#"a "quoted" string, with = signs"#))]),
            time_us: Some(1),
        };
        assert_eq!(point_in(line, Precision::Microseconds), expected);
        // One nanosecond is no whole microsecond.
        assert_eq!(point(line).time_us, Some(0));
    }

    #[test]
    fn measurement_escapes_only_comma_and_space() {
        let p = point(r"a\,b\ c\=d,k=v x=1");
        assert_eq!(p.measurement, r"a,b c\=d");
        // `=` needs no escape in a measurement.
        assert_eq!(point("a=b x=1").measurement, "a=b");
    }

    #[test]
    fn names_escape_comma_equals_and_space() {
        let p = point(r"m,k\ \,\==v\ \,\= f\ \,\==1");
        assert_eq!(p.tags, tags(&[("k ,=", "v ,=")]));
        assert_eq!(p.fields, fields(&[("f ,=", Float(1.0))]));
    }

    #[test]
    fn backslash_before_anything_else_is_literal() {
        let p = point(r"C:\dir,path=C:\Windows\System32 f\x=1");
        assert_eq!(p.measurement, r"C:\dir");
        assert_eq!(p.tag("path"), Some(r"C:\Windows\System32"));
        assert!(p.field(r"f\x").is_some());
        // `\\` is not an escape in names: a literal backslash, then `\ `.
        let p = point(r"m,k=a\\ z x=1");
        assert_eq!(p.tag("k"), Some(r"a\ z"));
    }

    #[test]
    fn string_escapes() {
        assert_eq!(value(r#""a\\b\"c\d""#), Ok(string(r#"a\b"c\d"#)));
        assert_eq!(
            value(r#""ends in a backslash\\""#),
            Ok(string(r"ends in a backslash\"))
        );
        assert_eq!(value(r#""""#), Ok(string("")));
        assert_eq!(value(r#""x=1, y=2 z""#), Ok(string("x=1, y=2 z")));
        // Control characters other than newlines are kept in strings.
        assert_eq!(value("\"tab\there\r\""), Ok(string("tab\there\r")));
        assert_eq!(value("\"Launch 🚀\""), Ok(string("Launch 🚀")));
    }

    #[test]
    fn floats() {
        let cases = [
            ("1", 1.0),
            ("1.5", 1.5),
            ("-1.5e10", -1.5e10),
            ("1e-3", 1e-3),
            (".5", 0.5),
            ("-.5", -0.5),
            ("5.", 5.0),
            ("1.e5", 1e5),
            ("1E+5", 1e5),
            ("007.50", 7.5),
            ("-0", -0.0),
            ("-1.234456e+78", -1.234456e78),
            ("1.7976931348623157e308", f64::MAX),
            // Underflow rounds to zero, as Go's ParseFloat does.
            ("1e-400", 0.0),
        ];
        for (text, expected) in cases {
            assert_eq!(value(text), Ok(Float(expected)), "{text}");
        }
    }

    #[test]
    fn floats_refused() {
        for text in [
            "NaN", "nan", "Inf", "-Inf", "inf", "+1", "0x10", "0x1p3", "1_000", ".", "-", "-.",
            "1e", "1e+", "e5", ".e5", "1.2.3", "1e5.5", "1ee5", "--1", "1-", "1,5", "12x", "one",
        ] {
            // A value ends at a comma, so `1,5` reads as `1` then a field `5`.
            let expected = if text == "1,5" {
                "missing `=` after field key `5`".to_string()
            } else {
                format!("invalid field value for `x`: `{text}`")
            };
            assert_eq!(value(text), Err(expected), "{text}");
        }
        assert_eq!(
            value("1e400"),
            Err("field value for `x` is out of range for a 64-bit float: `1e400`".into())
        );
        assert_eq!(
            value("-1e400"),
            Err("field value for `x` is out of range for a 64-bit float: `-1e400`".into())
        );
    }

    #[test]
    fn integers() {
        assert_eq!(value("-12i"), Ok(Integer(-12)));
        assert_eq!(value("0i"), Ok(Integer(0)));
        assert_eq!(value("-0i"), Ok(Integer(0)));
        assert_eq!(value("9223372036854775807i"), Ok(Integer(i64::MAX)));
        assert_eq!(value("-9223372036854775808i"), Ok(Integer(i64::MIN)));
        for text in ["9223372036854775808i", "-9223372036854775809i"] {
            assert_eq!(
                value(text),
                Err(format!(
                    "field value for `x` is out of range for a signed 64-bit integer: `{text}`"
                ))
            );
        }
        for text in ["12ii", "1.5i", "+1i", "i", "-i", "1_0i", "1e3i", " 1i"] {
            let expected = if text.starts_with(' ') {
                "missing field value for `x`".to_string()
            } else {
                format!("invalid field value for `x`: `{text}`")
            };
            assert_eq!(value(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn unsigned_integers() {
        assert_eq!(value("12u"), Ok(Unsigned(12)));
        assert_eq!(value("0u"), Ok(Unsigned(0)));
        assert_eq!(value("18446744073709551615u"), Ok(Unsigned(u64::MAX)));
        assert_eq!(
            value("18446744073709551616u"),
            Err(
                "field value for `x` is out of range for an unsigned 64-bit integer: `18446744073709551616u`"
                    .into()
            )
        );
        for text in ["-1u", "-0u", "+1u", "u", "1.0u", "1uu", "1iu"] {
            assert_eq!(
                value(text),
                Err(format!("invalid field value for `x`: `{text}`")),
                "{text}"
            );
        }
    }

    #[test]
    fn booleans() {
        for text in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(value(text), Ok(Boolean(true)), "{text}");
        }
        for text in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(value(text), Ok(Boolean(false)), "{text}");
        }
        for text in ["tRUE", "yes", "truee", "fa", "\"true\"x"] {
            assert!(value(text).is_err(), "{text}");
        }
        // Quoted, it is a string.
        assert_eq!(value("\"true\""), Ok(string("true")));
    }

    #[test]
    fn duplicate_field_keys_keep_the_last_value() {
        let p = point("m a=1,b=2,a=3i,c=4,b=\"x\"");
        assert_eq!(
            p.fields,
            fields(&[("a", Integer(3)), ("c", Float(4.0)), ("b", string("x"))])
        );
    }

    #[test]
    fn duplicate_tag_keys_are_refused() {
        assert_eq!(error("m,a=1,b=2,a=3 x=1"), "line 7: duplicate tag key `a`");
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        for line in ["", " ", "\t \t", "#", "# a comment", "   # indented, x=1 2"] {
            assert_eq!(
                parse_line(line, 1, Precision::Nanoseconds),
                Ok(None),
                "{line:?}"
            );
        }
    }

    #[test]
    fn whitespace_is_lenient() {
        let p = point_in(" \t cpu,host=a   x=1,y=2i    42 \t ", Precision::Seconds);
        assert_eq!(p.measurement, "cpu");
        assert_eq!(p.tag("host"), Some("a"));
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.time_us, Some(42_000_000));
        assert_eq!(point("cpu x=1   ").time_us, None);
        assert_eq!(point("cpu x=1 \t").time_us, None);
    }

    #[test]
    fn timestamps_convert_to_microseconds() {
        let cases = [
            (
                Precision::Nanoseconds,
                "1700000000123456789",
                1_700_000_000_123_456,
            ),
            (
                Precision::Microseconds,
                "1700000000123456",
                1_700_000_000_123_456,
            ),
            (
                Precision::Milliseconds,
                "1700000000123",
                1_700_000_000_123_000,
            ),
            (Precision::Seconds, "1700000000", 1_700_000_000_000_000),
            (Precision::Minutes, "28333333", 1_699_999_980_000_000),
            (Precision::Hours, "472222", 1_699_999_200_000_000),
            // Before 1970, and truncated toward zero.
            (Precision::Nanoseconds, "-1500", -1),
            (Precision::Seconds, "-1", -1_000_000),
            (
                Precision::Nanoseconds,
                "9223372036854775807",
                i64::MAX / 1_000,
            ),
            (Precision::Microseconds, "-9223372036854775808", i64::MIN),
            (Precision::Seconds, "0", 0),
            (Precision::Seconds, "-0", 0),
        ];
        for (precision, text, expected) in cases {
            let line = format!("m x=1 {text}");
            assert_eq!(point_in(&line, precision).time_us, Some(expected), "{line}");
        }
    }

    #[test]
    fn timestamps_out_of_range() {
        for (precision, text) in [
            (Precision::Nanoseconds, "9223372036854775808"),
            (Precision::Microseconds, "-9223372036854775809"),
            (Precision::Milliseconds, "9223372036854776"),
            (Precision::Seconds, "9223372036855"),
            (Precision::Minutes, "-153722867281"),
            (Precision::Hours, "2562047789"),
            (Precision::Hours, "99999999999999999999999999"),
        ] {
            let refused = parse_line(&format!("m x=1 {text}"), 2, precision);
            assert_eq!(
                refused.map_err(|error| error.to_string()),
                Err(format!("line 2: timestamp out of range: `{text}`")),
                "{precision:?} {text}"
            );
        }
    }

    #[test]
    fn precision_spellings() {
        let accepted = [
            ("n", Precision::Nanoseconds),
            ("ns", Precision::Nanoseconds),
            ("u", Precision::Microseconds),
            ("us", Precision::Microseconds),
            ("\u{b5}", Precision::Microseconds),
            ("\u{b5}s", Precision::Microseconds),
            ("\u{3bc}", Precision::Microseconds),
            ("\u{3bc}s", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("m", Precision::Minutes),
            ("h", Precision::Hours),
        ];
        for (text, precision) in accepted {
            assert_eq!(Precision::parse(text), Some(precision), "{text}");
        }
        for text in [
            "sec",
            "",
            "ns ",
            " ns",
            "NS",
            "S",
            "mins",
            "hr",
            "d",
            "µss",
            "nanoseconds",
        ] {
            assert_eq!(Precision::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn as_f64_and_lookups() {
        let p = point("m,host=a,dc=x f=1.5,i=-2i,u=3u,t=T,b=F,s=\"4\"");
        assert_eq!(p.tag("dc"), Some("x"));
        assert_eq!(p.tag("nope"), None);
        let number = |key| p.field(key).and_then(FieldValue::as_f64);
        assert_eq!(number("f"), Some(1.5));
        assert_eq!(number("i"), Some(-2.0));
        assert_eq!(number("u"), Some(3.0));
        assert_eq!(number("t"), Some(1.0));
        assert_eq!(number("b"), Some(0.0));
        assert_eq!(number("s"), None);
        assert_eq!(number("nope"), None);
    }

    // The errors the brief lists, each naming the line and the part.

    #[test]
    fn bad_escape_at_end_of_line() {
        assert_eq!(
            error(r"cpu\"),
            r"line 7: incomplete escape at end of line in measurement: `cpu\`"
        );
        assert_eq!(
            error(r"cpu,host=a\"),
            r"line 7: incomplete escape at end of line in tag value: `a\`"
        );
        assert_eq!(
            error(r"cpu,ho\"),
            r"line 7: incomplete escape at end of line in tag key: `ho\`"
        );
        assert_eq!(
            error(r"cpu x=1,y\"),
            r"line 7: incomplete escape at end of line in field key: `y\`"
        );
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            error("cpu,host=a"),
            "line 7: missing field set after `cpu,host=a`: a point needs at least one field"
        );
        assert_eq!(
            error("cpu   "),
            "line 7: missing field set after `cpu`: a point needs at least one field"
        );
        // An escaped space is part of the tag value, not the separator.
        assert_eq!(
            error(r"cpu,host=a\ x"),
            r"line 7: missing field set after `cpu,host=a\ x`: a point needs at least one field"
        );
    }

    #[test]
    fn empty_field_value() {
        assert_eq!(error("cpu x="), "line 7: missing field value for `x`");
        assert_eq!(error("cpu x=,y=1"), "line 7: missing field value for `x`");
        assert_eq!(error("cpu x= 1"), "line 7: missing field value for `x`");
    }

    #[test]
    fn invalid_numbers() {
        assert_eq!(
            error("cpu x=1.2.3"),
            "line 7: invalid field value for `x`: `1.2.3`"
        );
        assert_eq!(
            error("cpu x=12ii"),
            "line 7: invalid field value for `x`: `12ii`"
        );
        assert_eq!(
            error("cpu x=99999999999999999999i"),
            "line 7: field value for `x` is out of range for a signed 64-bit integer: `99999999999999999999i`"
        );
        assert_eq!(
            error("cpu usage_idle=12x 5"),
            "line 7: invalid field value for `usage_idle`: `12x`"
        );
    }

    #[test]
    fn unterminated_string() {
        assert_eq!(
            error(r#"cpu msg="abc, d=1 123"#),
            r#"line 7: unterminated string field value for `msg`: `"abc, d=1 123`"#
        );
        assert_eq!(
            error(r#"cpu msg="abc\""#),
            r#"line 7: unterminated string field value for `msg`: `"abc\"`"#
        );
        assert_eq!(
            error(r#"cpu msg="abc\"#),
            r#"line 7: unterminated string field value for `msg`: `"abc\`"#
        );
        assert_eq!(
            error(r#"cpu msg="abc"def"#),
            r#"line 7: unexpected text after string field value for `msg`: `def`"#
        );
    }

    #[test]
    fn tag_errors() {
        assert_eq!(
            error("cpu,host x=1"),
            "line 7: missing `=` after tag key `host`"
        );
        assert_eq!(
            error("cpu,host"),
            "line 7: missing `=` after tag key `host`"
        );
        assert_eq!(
            error("cpu,host=a,dc x=1"),
            "line 7: missing `=` after tag key `dc`"
        );
        assert_eq!(
            error("cpu,host= x=1"),
            "line 7: missing tag value for tag key `host`"
        );
        assert_eq!(
            error("cpu,host=,dc=x x=1"),
            "line 7: missing tag value for tag key `host`"
        );
        assert_eq!(
            error("cpu,=a x=1"),
            "line 7: missing tag key before `=a x=1`"
        );
        assert_eq!(error("cpu, x=1"), "line 7: missing tag key before ` x=1`");
        assert_eq!(error("cpu,"), "line 7: missing tag key at end of line");
        assert_eq!(
            error("cpu,a=b=c x=1"),
            "line 7: unescaped `=` in tag value for tag key `a`: `b=c x=1`"
        );
    }

    #[test]
    fn field_and_measurement_errors() {
        assert_eq!(
            error(",host=a x=1"),
            "line 7: missing measurement before `,host=a x=1`"
        );
        assert_eq!(error("cpu x"), "line 7: missing `=` after field key `x`");
        assert_eq!(error("cpu x 1"), "line 7: missing `=` after field key `x`");
        assert_eq!(error("cpu =1"), "line 7: missing field key before `=1`");
        assert_eq!(
            error("cpu x=1,"),
            "line 7: missing field key at end of line"
        );
        assert_eq!(
            error("cpu x=1,,y=2"),
            "line 7: missing field key before `,y=2`"
        );
        assert_eq!(error("cpu x=1, 5"), "line 7: missing field key before ` 5`");
        assert_eq!(
            error("cpu x=abc"),
            "line 7: invalid field value for `x`: `abc`"
        );
    }

    #[test]
    fn timestamp_garbage() {
        for text in ["12ab", "+5", "1.5", "-", "now", "0x10", "1e9"] {
            assert_eq!(
                error(&format!("cpu x=1 {text}")),
                format!("line 7: invalid timestamp (an integer is expected): `{text}`")
            );
        }
    }

    #[test]
    fn trailing_garbage() {
        assert_eq!(
            error("cpu x=1 123 456"),
            "line 7: unexpected text after timestamp: `456`"
        );
        assert_eq!(
            error("cpu x=1 123\tjunk here "),
            "line 7: unexpected text after timestamp: `junk here`"
        );
    }

    #[test]
    fn control_characters_in_names() {
        assert_eq!(
            error("cp\u{1b}u x=1"),
            "line 7: measurement contains a control character (\\u{1b}): `cp\\u{1b}u`"
        );
        assert_eq!(
            error("cpu,host=a\tb x=1"),
            "line 7: tag value contains a control character (\\u{9}): `a\\tb`"
        );
        assert_eq!(
            error("cpu x\u{85}y=1"),
            "line 7: field key contains a control character (\\u{85}): `x\\u{85}y`"
        );
    }

    #[test]
    fn too_long_line() {
        let line = format!("cpu x=\"{}\"", "a".repeat(MAX_LINE_BYTES));
        assert_eq!(
            error(&line),
            format!(
                "line 7: line is too long: {} bytes, the limit is 65536",
                MAX_LINE_BYTES + 8
            )
        );
        // Exactly at the limit is fine.
        let filler = "a".repeat(MAX_LINE_BYTES - "cpu x=\"\"".len());
        let p = point(&format!("cpu x=\"{filler}\""));
        assert_eq!(p.field("x"), Some(&FieldValue::String(filler)));
        // Even a comment is bounded.
        let comment = format!("#{}", " ".repeat(MAX_LINE_BYTES));
        assert!(parse_line(&comment, 1, Precision::Nanoseconds).is_err());
    }

    #[test]
    fn too_many_fields() {
        let list = |count: usize| {
            (0..count)
                .map(|index| format!("f{index}=1"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            point(&format!("cpu {}", list(MAX_FIELDS))).fields.len(),
            256
        );
        assert_eq!(
            error(&format!("cpu {}", list(MAX_FIELDS + 1))),
            "line 7: too many fields: the limit is 256"
        );
        // Counted as written, even when keys repeat.
        let repeated = vec!["x=1"; MAX_FIELDS + 1].join(",");
        assert_eq!(
            error(&format!("cpu {repeated}")),
            "line 7: too many fields: the limit is 256"
        );
    }

    #[test]
    fn too_many_tags() {
        let list = |count: usize| {
            (0..count)
                .map(|index| format!(",t{index}=v"))
                .collect::<String>()
        };
        assert_eq!(point(&format!("cpu{} x=1", list(MAX_TAGS))).tags.len(), 64);
        assert_eq!(
            error(&format!("cpu{} x=1", list(MAX_TAGS + 1))),
            "line 7: too many tags: the limit is 64"
        );
    }

    #[test]
    fn long_names() {
        let longest = "n".repeat(MAX_NAME_BYTES);
        let p = point(&format!("{longest},{longest}={longest} {longest}=1"));
        assert_eq!(p.measurement, longest);
        let too_long = "n".repeat(MAX_NAME_BYTES + 1);
        let quoted = format!("`{}`…", "n".repeat(64));
        let cases = [
            (format!("{too_long} x=1"), "measurement"),
            (format!("m,{too_long}=v x=1"), "tag key"),
            (format!("m,k={too_long} x=1"), "tag value"),
            (format!("m {too_long}=1"), "field key"),
        ];
        for (line, part) in cases {
            assert_eq!(
                error(&line),
                format!("line 7: {part} is too long: 257 bytes, the limit is 256: {quoted}")
            );
        }
        // The limit is on the unescaped name: 256 escaped spaces fit.
        let spaces = r"\ ".repeat(MAX_NAME_BYTES);
        assert_eq!(point(&format!("{spaces} x=1")).measurement.len(), 256);
    }

    #[test]
    fn long_string_values() {
        // The line limit keeps a whole line's string below this one, so the
        // string reader is tried on its own.
        let body = "s".repeat(MAX_STRING_FIELD_BYTES);
        let fits = format!("\"{body}\"");
        let mut cur = Cursor::new(&fits);
        assert_eq!(
            read_string_value(&mut cur, "x"),
            Ok(FieldValue::String(body.clone()))
        );
        let over = format!("\"{body}\\\\\"");
        let mut cur = Cursor::new(&over);
        assert_eq!(
            read_string_value(&mut cur, "x"),
            Err("string field value for `x` is too long: 65537 bytes, the limit is 65536".into())
        );
    }

    #[test]
    fn quotes_are_cut_to_64_characters() {
        let token = format!("{}x", "é".repeat(100));
        let message = error(&format!("cpu k={token}"));
        assert_eq!(
            message,
            format!("line 7: invalid field value for `k`: `{}`…", "é".repeat(64))
        );
    }

    #[test]
    fn body_reports_points_and_errors_in_order() {
        let body =
            "# telegraf\r\ncpu x=1 1\r\n\r\nbad line\nmem y=2i 2\n  \ncpu x=\n\ndisk z=t 3\n";
        let (points, errors) = parse_body(body, Precision::Seconds);
        let numbered: Vec<(usize, &str, Option<i64>)> = points
            .iter()
            .map(|(number, point)| (*number, point.measurement.as_str(), point.time_us))
            .collect();
        assert_eq!(
            numbered,
            vec![
                (2, "cpu", Some(1_000_000)),
                (5, "mem", Some(2_000_000)),
                (9, "disk", Some(3_000_000)),
            ]
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                "line 4: missing `=` after field key `line`",
                "line 7: missing field value for `x`",
            ]
        );
        assert_eq!(parse_body("", Precision::Seconds), (vec![], vec![]));
    }

    #[test]
    fn body_strips_only_one_carriage_return() {
        let (points, errors) = parse_body("cpu x=1\r\r\n", Precision::Seconds);
        assert!(points.is_empty());
        assert_eq!(
            errors,
            vec![LineError {
                line: 1,
                message: "invalid field value for `x`: `1\\r`".into()
            }]
        );
    }

    // Property tests.

    /// Characters for names: mostly the ones the protocol treats specially,
    /// then anything printable.
    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => prop::sample::select(vec![
                ' ', ',', '=', '"', '\\', '#', 'a', 'b', 'z', '0', '_', '-', '.', 'é', '🚀',
            ]),
            // A control character becomes U+FFFD rather than being
            // rejected, which would starve long runs of cases.
            1 => any::<char>().prop_map(|c| if c.is_control() { '\u{fffd}' } else { c }),
        ]
    }

    /// A name whose escaping is unambiguous. The protocol has no way to
    /// write a name that ends in a backslash (the backslash would escape the
    /// separator after it; `\\` is not an escape in names), so a generated
    /// name ending in one gets an `x` appended. Backslashes anywhere else,
    /// even before a special character, round-trip.
    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(name_char(), 1..16).prop_map(|chars| {
            let mut name: String = chars.into_iter().collect();
            if name.ends_with('\\') {
                name.push('x');
            }
            name
        })
    }

    /// A measurement starting with `#` would make the line a comment.
    fn measurement() -> impl Strategy<Value = String> {
        name().prop_map(|name| {
            if name.starts_with('#') {
                format!("m{name}")
            } else {
                name
            }
        })
    }

    /// Keys from a small pool repeat often, to exercise last-wins.
    fn field_key() -> impl Strategy<Value = String> {
        prop_oneof![
            name(),
            prop::sample::select(vec!["a", "b"]).prop_map(String::from),
        ]
    }

    fn field_value() -> impl Strategy<Value = FieldValue> {
        use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
        prop_oneof![
            (POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO).prop_map(Float),
            any::<i64>().prop_map(Integer),
            any::<u64>().prop_map(Unsigned),
            prop::collection::vec(name_char(), 0..24)
                .prop_map(|chars| FieldValue::String(chars.into_iter().collect())),
            any::<bool>().prop_map(Boolean),
        ]
    }

    fn any_point() -> impl Strategy<Value = Point> {
        (
            measurement(),
            prop::collection::vec((name(), name()), 0..6),
            prop::collection::vec((field_key(), field_value()), 1..8),
            prop::option::of(any::<i64>()),
        )
            .prop_map(|(measurement, tags, fields, time_us)| {
                // Tag keys are unique: a repeated one is refused.
                let mut seen = HashSet::new();
                let tags = tags
                    .into_iter()
                    .filter(|(key, _)| seen.insert(key.clone()))
                    .collect();
                Point {
                    measurement,
                    tags,
                    fields,
                    time_us,
                }
            })
    }

    /// Backslash-escapes each of `special` in `name`, and nothing else.
    fn escape(name: &str, special: &[u8]) -> String {
        let mut escaped = String::with_capacity(name.len());
        for c in name.chars() {
            if u8::try_from(c).is_ok_and(|byte| special.contains(&byte)) {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped
    }

    /// `variant` picks among the ways a value can be written.
    fn encode_value(value: &FieldValue, variant: usize) -> String {
        match value {
            Float(number) if variant.is_multiple_of(2) => format!("{number:?}"),
            Float(number) => format!("{number:e}"),
            Integer(number) => format!("{number}i"),
            Unsigned(number) => format!("{number}u"),
            FieldValue::String(text) => {
                format!("\"{}\"", text.replace('\\', r"\\").replace('"', "\\\""))
            }
            Boolean(true) => ["t", "T", "true", "True", "TRUE"][variant % 5].to_string(),
            Boolean(false) => ["f", "F", "false", "False", "FALSE"][variant % 5].to_string(),
        }
    }

    /// The line a client would write for `point`, in microseconds.
    fn encode(point: &Point) -> String {
        let mut line = escape(&point.measurement, b", ");
        for (key, value) in &point.tags {
            line.push(',');
            line.push_str(&escape(key, b",= "));
            line.push('=');
            line.push_str(&escape(value, b",= "));
        }
        for (index, (key, value)) in point.fields.iter().enumerate() {
            line.push(if index == 0 { ' ' } else { ',' });
            line.push_str(&escape(key, b",= "));
            line.push('=');
            line.push_str(&encode_value(value, index));
        }
        if let Some(time) = point.time_us {
            line.push_str(&format!(" {time}"));
        }
        line
    }

    /// `fields` with every value but the last of each key dropped, written
    /// out plainly rather than with the parser's own helper.
    fn last_wins(fields: &[(String, FieldValue)]) -> Vec<(String, FieldValue)> {
        fields
            .iter()
            .enumerate()
            .filter(|(index, (key, _))| fields[index + 1..].iter().all(|(later, _)| later != key))
            .map(|(_, field)| field.clone())
            .collect()
    }

    /// Text made mostly of the protocol's own characters, so the parser's
    /// paths are all reached.
    const LINEISH: &str = "[a-z0-9 ,=\"\\\\#.+\\-_ietfuTFE\r\n\t\u{0}é🚀]{0,200}";

    proptest! {
        #[test]
        fn parse_body_never_panics(body in any::<String>()) {
            let (points, errors) = parse_body(&body, Precision::Nanoseconds);
            prop_assert!(points.len() + errors.len() <= body.split('\n').count());
        }

        #[test]
        fn parse_body_never_panics_on_lineish_text(body in LINEISH) {
            let lines = body.split('\n').count();
            let (points, errors) = parse_body(&body, Precision::Hours);
            prop_assert!(points.windows(2).all(|pair| pair[0].0 < pair[1].0));
            prop_assert!(errors.windows(2).all(|pair| pair[0].line < pair[1].line));
            for (number, point) in &points {
                prop_assert!((1..=lines).contains(number));
                prop_assert!(!point.measurement.is_empty() && !point.fields.is_empty());
            }
            for error in &errors {
                prop_assert!((1..=lines).contains(&error.line));
            }
        }

        #[test]
        fn encoded_points_parse_back(original in any_point()) {
            let line = encode(&original);
            let parsed = parse_line(&line, 1, Precision::Microseconds);
            let expected = Point {
                fields: last_wins(&original.fields),
                ..original
            };
            prop_assert_eq!(parsed, Ok(Some(expected)), "line: {}", line);
        }

        #[test]
        fn timestamps_convert_exactly(time in any::<i64>(), precision in prop::sample::select(vec![
            Precision::Nanoseconds,
            Precision::Microseconds,
            Precision::Milliseconds,
            Precision::Seconds,
            Precision::Minutes,
            Precision::Hours,
        ])) {
            // Worked out in i128, where nothing overflows; i128 division
            // truncates toward zero too.
            let wide = i128::from(time);
            let micros = match precision {
                Precision::Nanoseconds => wide / 1_000,
                Precision::Microseconds => wide,
                Precision::Milliseconds => wide * 1_000,
                Precision::Seconds => wide * 1_000_000,
                Precision::Minutes => wide * 60_000_000,
                Precision::Hours => wide * 3_600_000_000,
            };
            let parsed = parse_line(&format!("m x=1 {time}"), 1, precision)
                .map(|point| point.and_then(|point| point.time_us));
            match i64::try_from(micros) {
                Ok(micros) => prop_assert_eq!(parsed, Ok(Some(micros))),
                Err(_) => prop_assert_eq!(
                    parsed.map_err(|error| error.message),
                    Err(format!("timestamp out of range: `{time}`"))
                ),
            }
        }
    }
}
