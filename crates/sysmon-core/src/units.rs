//! The size units the original `/monitor` routes accept.

use std::fmt;
use std::str::FromStr;

/// A power-of-1024 unit; a value in it is the byte count divided by
/// `1024^k`, rounded down, as the original did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    TB,
    GB,
    MB,
    KB,
    B,
}

impl Units {
    fn exponent(self) -> u32 {
        match self {
            Units::B => 0,
            Units::KB => 1,
            Units::MB => 2,
            Units::GB => 3,
            Units::TB => 4,
        }
    }

    /// Converts a byte count into this unit, rounding down.
    pub fn from_bytes(self, bytes: u64) -> u64 {
        bytes / 1024u64.pow(self.exponent())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Units::TB => "TB",
            Units::GB => "GB",
            Units::MB => "MB",
            Units::KB => "KB",
            Units::B => "B",
        }
    }
}

impl Default for Units {
    /// The original's default for every `/monitor` route.
    fn default() -> Self {
        Units::GB
    }
}

impl fmt::Display for Units {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of a unit that is none of TB, GB, MB, KB, B.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported units `{0}`: use one of TB, GB, MB, KB, B")]
pub struct UnknownUnits(pub String);

impl FromStr for Units {
    type Err = UnknownUnits;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "TB" => Ok(Units::TB),
            "GB" => Ok(Units::GB),
            "MB" => Ok(Units::MB),
            "KB" => Ok(Units::KB),
            "B" => Ok(Units::B),
            _ => Err(UnknownUnits(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_rounding_down() {
        let bytes = 3 * 1024 * 1024 * 1024 + 1;
        assert_eq!(Units::GB.from_bytes(bytes), 3);
        assert_eq!(Units::MB.from_bytes(bytes), 3072);
        assert_eq!(Units::B.from_bytes(bytes), bytes);
        assert_eq!(Units::TB.from_bytes(bytes), 0);
    }

    #[test]
    fn parses_known_and_rejects_others() {
        assert_eq!("MB".parse::<Units>(), Ok(Units::MB));
        assert_eq!("kb".parse::<Units>(), Ok(Units::KB));
        assert!("PB".parse::<Units>().is_err());
        assert!("".parse::<Units>().is_err());
    }
}
