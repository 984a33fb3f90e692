//! Rows read through PostgreSQL's binary `COPY ... TO STDOUT`.
//!
//! For a long report this is the cheapest way out of PostgreSQL: the rows
//! arrive as plain bytes, where a `SELECT` through sqlx builds a row object
//! per row and decodes each value through its type machinery (most of a
//! 100k-row report's time on our side; see docs/benchmarks.md). The format
//! is documented with `COPY`: a header, then per row a 16-bit field count
//! and per field a 32-bit length (-1 for NULL) and the value in network
//! byte order; a field count of -1 ends the data.

use sysmon_core::{Sample, UnixTime};

use crate::error::{Error, Result};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags (32 bits), header extension length (32 bits).
const HEADER_BYTES: usize = SIGNATURE.len() + 4 + 4;

/// Decodes rows of `(time_us int8, cpu_load float8, mem float8, storage
/// float8)`, fed in whatever pieces the connection delivers.
#[derive(Default)]
pub struct SampleRowDecoder {
    pending: Vec<u8>,
    header_read: bool,
    finished: bool,
}

impl SampleRowDecoder {
    /// Appends `bytes` and moves every complete row into `rows`.
    pub fn feed(&mut self, bytes: &[u8], rows: &mut Vec<Sample>) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        if !self.header_read {
            if self.pending.len() < HEADER_BYTES {
                return Ok(());
            }
            if !self.pending.starts_with(SIGNATURE) {
                return Err(malformed("no PGCOPY signature"));
            }
            let extension = read_i32(&self.pending[HEADER_BYTES - 4..]) as usize;
            if self.pending.len() < HEADER_BYTES + extension {
                return Ok(());
            }
            used = HEADER_BYTES + extension;
            self.header_read = true;
        }
        while !self.finished {
            match decode_row(&self.pending[used..])? {
                Decoded::Row(sample, length) => {
                    rows.push(sample);
                    used += length;
                }
                Decoded::End => {
                    self.finished = true;
                    used += 2;
                }
                Decoded::Incomplete => break,
            }
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Checks that the data ended properly: with the trailer, nothing after.
    pub fn finish(self) -> Result<()> {
        if self.finished && self.pending.is_empty() {
            Ok(())
        } else {
            Err(malformed("the data ended part way"))
        }
    }
}

enum Decoded {
    Row(Sample, usize),
    End,
    Incomplete,
}

fn decode_row(bytes: &[u8]) -> Result<Decoded> {
    let Some(count) = bytes.get(..2) else {
        return Ok(Decoded::Incomplete);
    };
    match i16::from_be_bytes([count[0], count[1]]) {
        -1 => return Ok(Decoded::End),
        4 => {}
        other => return Err(malformed(&format!("{other} fields in a row, expected 4"))),
    }
    let mut at = 2;
    let mut values = [None; 4];
    for value in &mut values {
        let Some(length) = bytes.get(at..at + 4) else {
            return Ok(Decoded::Incomplete);
        };
        at += 4;
        match read_i32(length) {
            -1 => {}
            8 => {
                let Some(data) = bytes.get(at..at + 8) else {
                    return Ok(Decoded::Incomplete);
                };
                let mut word = [0; 8];
                word.copy_from_slice(data);
                *value = Some(word);
                at += 8;
            }
            other => return Err(malformed(&format!("a {other}-byte field, expected 8"))),
        }
    }
    let [time, cpu, mem, storage] = values;
    let time = time.ok_or_else(|| malformed("a row without a time"))?;
    let float = |word: Option<[u8; 8]>| word.map(f64::from_be_bytes);
    let sample = Sample {
        time: UnixTime::from_micros(i64::from_be_bytes(time)),
        cpu_load: float(cpu),
        mem: float(mem),
        storage: float(storage),
        extended: None,
    };
    Ok(Decoded::Row(sample, at))
}

fn read_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn malformed(what: &str) -> Error {
    Error::Internal(format!(
        "unexpected binary COPY data from PostgreSQL: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes
    }

    fn row(time: i64, values: [Option<f64>; 3]) -> Vec<u8> {
        let mut bytes = 4i16.to_be_bytes().to_vec();
        bytes.extend_from_slice(&8i32.to_be_bytes());
        bytes.extend_from_slice(&time.to_be_bytes());
        for value in values {
            match value {
                Some(value) => {
                    bytes.extend_from_slice(&8i32.to_be_bytes());
                    bytes.extend_from_slice(&value.to_be_bytes());
                }
                None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        bytes
    }

    fn stream() -> Vec<u8> {
        let mut bytes = header();
        bytes.extend(row(1_000_000, [Some(1.5), None, Some(-2.0)]));
        bytes.extend(row(2_000_001, [None, Some(7.0), None]));
        bytes.extend_from_slice(&(-1i16).to_be_bytes());
        bytes
    }

    #[test]
    fn rows_decode_whatever_the_pieces() {
        let bytes = stream();
        for piece in [1, 3, 7, 19, bytes.len()] {
            let mut decoder = SampleRowDecoder::default();
            let mut rows = Vec::new();
            for part in bytes.chunks(piece) {
                decoder.feed(part, &mut rows).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(rows.len(), 2, "pieces of {piece}");
            assert_eq!(rows[0].time.micros(), 1_000_000);
            assert_eq!(
                (rows[0].cpu_load, rows[0].mem, rows[0].storage),
                (Some(1.5), None, Some(-2.0))
            );
            assert_eq!(rows[1].time.micros(), 2_000_001);
            assert_eq!((rows[1].cpu_load, rows[1].mem), (None, Some(7.0)));
        }
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error() {
        let bytes = stream();
        let mut decoder = SampleRowDecoder::default();
        let mut rows = Vec::new();
        decoder.feed(&bytes[..bytes.len() - 5], &mut rows).unwrap();
        assert!(decoder.finish().is_err(), "no trailer");

        let mut decoder = SampleRowDecoder::default();
        assert!(decoder
            .feed(b"time_us\tcpu_load\tmem\n1\t2\t3\n", &mut rows)
            .is_err());

        let mut wrong_width = header();
        wrong_width.extend_from_slice(&2i16.to_be_bytes());
        assert!(SampleRowDecoder::default()
            .feed(&wrong_width, &mut rows)
            .is_err());
    }
}
