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

/// Joins continuation lines and drops blank and comment lines.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for raw in text.split(['\n', '\r']) {
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
            'u' => match chars
                .get(i..i + 4)
                .map(|h| h.iter().collect::<String>())
                .and_then(|h| u32::from_str_radix(&h, 16).ok())
                .and_then(char::from_u32)
            {
                Some(decoded) => {
                    out.push(decoded);
                    i += 4;
                }
                None => out.push_str("\\u"),
            },
            other => out.push(other),
        }
    }
    out
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
    }
}
