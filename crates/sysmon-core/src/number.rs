//! JSON numbers the way the original server printed them.
//!
//! The original was Python: a value stored as `18` came back as `18`, not
//! `18.0`. Clients compare and display these, so integral values are written
//! as JSON integers and everything else as floats.

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Largest integer an `f64` represents exactly; beyond it we keep the float.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Turns a metric value into the JSON number a Python client expects.
pub fn json_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}

/// A metric value that serializes as [`json_number`] does, without building
/// an intermediate [`Value`] (reports hold many thousands of them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricNumber(pub f64);

impl Serialize for MetricNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
            serializer.serialize_i64(value as i64)
        } else {
            serializer.serialize_f64(value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_values_are_integers() {
        assert_eq!(json_number(18.0).to_string(), "18");
        assert_eq!(json_number(0.0).to_string(), "0");
        assert_eq!(json_number(20.5).to_string(), "20.5");
        assert!(
            json_number(1e300).is_f64(),
            "too large to be an exact integer"
        );
        let serialized = serde_json::to_string(&[MetricNumber(18.0), MetricNumber(20.5)]).unwrap();
        assert_eq!(serialized, "[18,20.5]");
    }
}
