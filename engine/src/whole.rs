//! Integers as JSON has them: `2168` and `2168.0` are the same number (JSON Schema counts both as an
//! `integer`), so a field that takes a whole number accepts either; a fraction, a negative or an out-of-range
//! value is still an error that names the field.

use serde::{Deserialize, Deserializer, de::Error};

/// Deserialize a whole number into `T`, from an integer or from a float with no fractional part.
///
/// # Errors
/// Not a number, a fraction, negative, or too large for `T`.
pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (None, Some(f)) if f.fract() == 0.0 && (0.0..2f64.powi(64)).contains(&f) => Some(f as u64),
        _ => None,
    };
    let value = whole.ok_or_else(|| D::Error::custom(format!("invalid value: {n}, expected a whole number >= 0")))?;
    T::try_from(value).map_err(|_| D::Error::custom(format!("invalid value: {n} is too large")))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct W {
        #[serde(deserialize_with = "super::deserialize")]
        n: u32,
    }

    fn parse(s: &str) -> Result<u32, String> {
        serde_json::from_str::<W>(s).map(|w| w.n).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(parse(r#"{"n": 2168}"#), Ok(2168));
        assert_eq!(parse(r#"{"n": 2168.0}"#), Ok(2168));
        assert_eq!(parse(r#"{"n": 2e3}"#), Ok(2000));
        assert!(parse(r#"{"n": 2168.5}"#).unwrap_err().contains("whole number"));
        assert!(parse(r#"{"n": -1}"#).unwrap_err().contains("whole number"));
        assert!(parse(r#"{"n": 4294967296}"#).unwrap_err().contains("too large"));
        assert!(parse(r#"{"n": "1"}"#).is_err());
    }
}
