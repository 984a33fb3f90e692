//! Prometheus remote write 1.0: a snappy-compressed (block format)
//! protobuf `WriteRequest` (its messages: [`sysmon_core::prom`]).

use prost::Message;
pub use sysmon_core::prom::{Label, PromSample, TimeSeries, WriteRequest};

use crate::error::{Error, Result};

/// Reads a request body: snappy (block format, as remote write sends it),
/// at most `limit` bytes once inflated, then protobuf.
pub fn decode(body: &[u8], limit: usize) -> Result<WriteRequest> {
    let inflated_len = snap::raw::decompress_len(body).map_err(|e| {
        Error::InvalidPayload(format!(
            "the body is not snappy-compressed (remote write sends snappy's block format): {e}"
        ))
    })?;
    if inflated_len > limit {
        return Err(Error::PayloadTooLarge { limit });
    }
    let inflated = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Error::InvalidPayload(format!("the snappy body is broken: {e}")))?;
    WriteRequest::decode(inflated.as_slice()).map_err(|e| {
        Error::InvalidPayload(format!(
            "the body is not a remote-write protobuf WriteRequest: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, value: f64) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "instance".into(),
                    value: "web-1:9100".into(),
                },
            ],
            samples: vec![PromSample {
                value,
                timestamp: 1_700_000_000_123,
            }],
        }
    }

    #[test]
    fn a_snappy_protobuf_request_reads_back() {
        let request = WriteRequest {
            timeseries: vec![series("node_load1", 0.5), series("node_load5", 0.25)],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap();
        let read = decode(&body, 1 << 20).unwrap();
        assert_eq!(read, request);
        assert_eq!(read.timeseries[0].label("instance"), Some("web-1:9100"));
    }

    #[test]
    fn broken_bodies_say_what_is_wrong() {
        let not_snappy = decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20).unwrap_err();
        assert!(not_snappy.to_string().contains("snappy"), "{not_snappy}");
        let garbage = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\x01")
            .unwrap();
        let not_protobuf = decode(&garbage, 1 << 20).unwrap_err();
        assert!(
            not_protobuf.to_string().contains("protobuf"),
            "{not_protobuf}"
        );
        let big = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 4096])
            .unwrap();
        assert!(matches!(
            decode(&big, 1024),
            Err(Error::PayloadTooLarge { .. })
        ));
    }
}
