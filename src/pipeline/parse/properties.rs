//! A parser for Java `.properties` text, the format of the files the original operator mounted.
//!
//! It follows `java.util.Properties.load`: comment lines start with `#` or `!`, the key ends at the
//! first unescaped `=`, `:` or whitespace, a trailing backslash continues the line, and escapes
//! (`\t`, `\n`, `\uXXXX`, …) are decoded. The value is everything after the separator, so a value
//! may itself contain `=` (the original cut it there).

/// Parses properties text into `(key, value)` pairs in file order. Never fails: like Java, any
/// text is some set of properties (a malformed `\u` escape is kept literally).
pub fn parse(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .into_iter()
        .filter_map(|line| split_entry(&line))
        .collect()
}

/// Lines ended by `\n`, `\r` or `\r\n` (one terminator, as in Java: a continuation before a CRLF
/// continues onto the next line, not onto an empty one).
fn physical_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\n', '\r']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Joins continuation lines and drops blank and comment lines.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for raw in physical_lines(text) {
        let line = raw.trim_start_matches([' ', '\t', '\u{c}']);
        let line = match current.take() {
            Some(mut pending) => {
                pending.push_str(line);
                pending
            }
            None if line.is_empty() || line.starts_with(['#', '!']) => continue,
            None => line.to_string(),
        };
        if ends_with_odd_backslashes(&line) {
            current = Some(line[..line.len() - 1].to_string());
        } else {
            out.push(line);
        }
    }
    out.extend(current);
    out
}

fn ends_with_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn split_entry(line: &str) -> Option<(String, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '=' | ':' | ' ' | '\t' | '\u{c}' => break,
            _ => i += 1,
        }
    }
    let key_end = i.min(chars.len());
    let mut j = key_end;
    while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
        j += 1;
    }
    if j < chars.len() && matches!(chars[j], '=' | ':') {
        j += 1;
        while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
            j += 1;
        }
    }
    let key = unescape(&chars[..key_end]);
    if key.is_empty() {
        return None;
    }
    Some((key, unescape(&chars[j..])))
}

fn unescape(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '\\' || i == chars.len() {
            out.push(c);
            continue;
        }
        let e = chars[i];
        i += 1;
        match e {
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'f' => out.push('\u{c}'),
            'u' => match decode_utf16_escape(&chars[i..]) {
                Some((decoded, used)) => {
                    out.push(decoded);
                    i += used;
                }
                None => out.push_str("\\u"),
            },
            other => out.push(other),
        }
    }
    out
}

/// The character a `\uXXXX` escape (the `\u` already consumed) stands for, and how many chars
/// after the `\u` it used: a UTF-16 surrogate pair is two escapes (`\uD83D\uDE00`), as in Java.
fn decode_utf16_escape(after: &[char]) -> Option<(char, usize)> {
    let unit = |chars: &[char]| -> Option<u16> {
        let hex: String = chars.get(..4)?.iter().collect();
        u16::from_str_radix(&hex, 16).ok()
    };
    let high = unit(after)?;
    if let Some(c) = char::from_u32(u32::from(high)) {
        return Some((c, 4));
    }
    let low = after
        .get(4..6)
        .filter(|e| e == &['\\', 'u'])
        .and_then(|_| unit(&after[6..]))?;
    let c = char::decode_utf16([high, low]).next()?.ok()?;
    Some((c, 10))
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn values_keep_later_separators() {
        assert_eq!(
            pairs("sasl.jaas.config=org.Plain required username=\"k\" password=\"s==\";\n"),
            vec![p(
                "sasl.jaas.config",
                "org.Plain required username=\"k\" password=\"s==\";"
            )]
        );
    }

    #[test]
    fn comments_blank_lines_and_separators() {
        let text = "# comment\n! bang\n\n  a = 1\nb:2\nc 3\nd\n   e=\t x y  \n";
        assert_eq!(
            pairs(text),
            vec![p("a", "1"), p("b", "2"), p("c", "3"), p("d", ""), p("e", "x y  ")]
        );
    }

    #[test]
    fn continuations_and_escapes() {
        let text = "k=one \\\n    two\nesc\\=key=a\\tb\\u0041\\\\\ncrlf=x\r\n";
        assert_eq!(
            pairs(text),
            vec![p("k", "one two"), p("esc=key", "a\tbA\\"), p("crlf", "x")]
        );
    }

    #[test]
    fn malformed_unicode_escape_is_kept() {
        assert_eq!(pairs("k=\\uZZ"), vec![p("k", "\\uZZ")]);
        assert_eq!(pairs("k=\\uD83Dx"), vec![p("k", "\\uD83Dx")], "a lone surrogate");
    }

    #[test]
    fn a_continuation_before_a_crlf_ending_continues_onto_the_next_line() {
        assert_eq!(
            pairs("k=one \\\r\n    two\r\nnext=3\r\n"),
            vec![p("k", "one two"), p("next", "3")]
        );
        assert_eq!(pairs("a=1\rb=2\n\rc=3"), vec![p("a", "1"), p("b", "2"), p("c", "3")]);
    }

    #[test]
    fn surrogate_pairs_decode_as_one_character() {
        assert_eq!(pairs("smile=\\uD83D\\uDE00!"), vec![p("smile", "\u{1F600}!")]);
    }
}
