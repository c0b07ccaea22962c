//! Secret values: held in [`Secret`], whose `Debug` prints `****`, replaced by placeholders in
//! the render that every message is built from, and masked in any text that leaves the process
//! (a second line of defence).

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

/// What stands for variable `$name` in the placeholder render: a transformed value then shows
/// as the same transform of its placeholder.
pub fn var_placeholder(name: &str) -> String {
    format!("{PLACEHOLDER_OPEN}${name}⟩")
}

/// What stands for env var `name` in the placeholder render.
pub fn env_placeholder(name: &str) -> String {
    format!("{PLACEHOLDER_OPEN}env.{name}⟩")
}

/// Opens every placeholder: a text holding it shows by itself that it was rendered with them.
pub const PLACEHOLDER_OPEN: char = '⟨';

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
