//! Secret values: held in [`Secret`], whose `Debug` prints `****`, and masked in any text that
//! leaves the process.

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for rendering only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Masks secret values in text that leaves the process (messages, Events, annotations, logs).
/// Values of four characters or more are masked wherever they occur; shorter ones only as a
/// whole quoted string: they cannot be meaningful secrets, and masking them everywhere would
/// garble every message.
pub fn mask<S: AsRef<str>>(text: &str, values: &[S]) -> String {
    let mut values: Vec<&str> = values.iter().map(AsRef::as_ref).filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.iter().fold(text.to_string(), |t, v| {
        if v.chars().count() >= 4 {
            t.replace(v, "****")
        } else {
            t.replace(&format!("{v:?}"), "\"****\"")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_values_anywhere_and_short_ones_only_when_quoted() {
        let masked = mask(r#"bad "ab" in ab-hunter2-x"#, &["hunter2", "ab", ""]);
        assert_eq!(masked, r#"bad "****" in ab-****-x"#);
    }
}
