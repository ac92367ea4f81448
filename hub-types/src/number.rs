//! Numbers as JSON spells them: `16` and `16.0` are the same whole number (JSON Schema
//! counts both as integers), so a receiver accepts either.

use serde::Deserialize;

/// Deserializes a whole number into `T`, accepting `16` and `16.0` alike; fractions and
/// out-of-range values are errors.
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let wide = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i128)
        });
    wide.and_then(|w| T::try_from(w).ok())
        .ok_or_else(|| D::Error::custom(format!("{n} is not an integer in range")))
}

/// [`whole`] for an optional field (`null` or absent: `None`; use with `#[serde(default)]`).
pub fn whole_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<i128>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Whole<T>>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct N {
        #[serde(deserialize_with = "super::whole")]
        n: u32,
    }

    fn parse(s: &str) -> Result<u32, String> {
        serde_json::from_str::<N>(s)
            .map(|n| n.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_either_spelling() {
        assert_eq!(parse(r#"{"n": 16}"#), Ok(16));
        assert_eq!(parse(r#"{"n": 16.0}"#), Ok(16));
        assert!(parse(r#"{"n": 16.5}"#)
            .unwrap_err()
            .contains("not an integer"));
        assert!(parse(r#"{"n": -1}"#)
            .unwrap_err()
            .contains("not an integer"));
        assert!(parse(r#"{"n": 5000000000}"#).is_err());
    }
}
