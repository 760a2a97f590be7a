//! Keeping secrets out of configuration errors.
//!
//! The TOML parser quotes the line an error is on (`3 | password = "hunter2`), and serde
//! quotes a value of the wrong type (`invalid type: integer `123456``). A configuration holds
//! passwords and tokens, and an error goes to a terminal, a CI log or a bug report, so:
//! quoted lines keep their key and lose their value when the key looks secret, a quoted line
//! without a key (the inside of a multi-line string) is not shown at all, and the values in a
//! message about a secret key are left out. The line and column numbers stay, so the error
//! still says where the problem is.

/// Parts of key names that mark a secret (compared in lower case).
const SECRET_WORDS: &[&str] = &["password", "passwd", "token", "secret", "key", "appskey", "nwkskey", "hash", "credential"];

/// Does a key (or key path such as `mqtt.password`, `admin.tokens[0].hash`) look like a secret?
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // The last segment decides: `keys_file` names a file, not a key.
    let last = key
        .rsplit(['.', '['])
        .next()
        .unwrap_or(&key)
        .trim_matches(|c: char| c == '"' || c == '\'' || c == ']' || c.is_whitespace());
    if last.ends_with("_file") || last.ends_with("_path") || last.ends_with("_dir") {
        return false;
    }
    SECRET_WORDS.iter().any(|w| last.contains(w))
}

/// A parse error's text with the quoted source lines redacted (see the module docs).
pub fn redact_source_lines(message: &str) -> String {
    message.lines().map(redact_snippet_line).collect::<Vec<_>>().join("\n")
}

/// Every URL in `text` with the password of its user part replaced:
/// `postgres://messnetz:hunter2@db/messnetz` → `postgres://messnetz:<not shown>@db/messnetz`.
/// For showing a connection URL (`store.url`) in errors, logs and configuration output.
pub fn hide_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first '/', '?', '#', quote or space; the user part at its last '@'.
        let end =
            after.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace()).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@').and_then(|a| authority[..a].find(':').map(|c| (c, a))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("<not shown>");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `  3 | password = "x"` → `  3 | password = <not shown>`; other lines as they are.
fn redact_snippet_line(line: &str) -> String {
    hide_url_passwords(&redact_snippet_line_keys(line))
}

fn redact_snippet_line_keys(line: &str) -> String {
    let Some((gutter, source)) = line.split_once(" | ").or_else(|| line.split_once(" |").filter(|(_, s)| s.is_empty())) else {
        return line.to_owned();
    };
    if !gutter.trim().chars().all(|c| c.is_ascii_digit()) || gutter.trim().is_empty() {
        // The caret line (`  |     ^`) and anything else that is not a quoted source line.
        return line.to_owned();
    }
    format!("{gutter} | {}", redact_source(source))
}

/// One line of TOML source as it may be shown.
fn redact_source(source: &str) -> String {
    let trimmed = source.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return source.to_owned();
    }
    // A table header, shown as it is: `[mqtt]`, `[[mqtt.subscriptions]]`.
    if trimmed.starts_with('[') && !trimmed.contains('=') && trimmed.ends_with(']') {
        return source.to_owned();
    }
    match source.split_once('=') {
        Some((key, value)) if looks_like_key(key) => {
            // A value that mentions a secret word may be a second `key = value` on the line.
            let value = value.to_ascii_lowercase();
            if is_secret_key(key) || SECRET_WORDS.iter().any(|w| value.contains(w)) {
                format!("{key}= <value not shown: it may be a secret>")
            } else {
                source.to_owned()
            }
        }
        // Not `key = value`: could be the inside of a multi-line string holding a secret.
        _ => "<line not shown: it may hold part of a value>".to_owned(),
    }
}

/// Bare or quoted TOML key, possibly dotted.
fn looks_like_key(key: &str) -> bool {
    let key = key.trim();
    !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' '))
        && !key.starts_with('.')
}

/// A serde message about a secret key without the values it quotes (between backticks or
/// double quotes): `invalid type: integer `123`, expected a string` → `invalid type: integer
/// <not shown>, expected a string`.
pub fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c == '`' || c == '"' {
            out.push_str("<not shown>");
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            hide_url_passwords(
                "store.url: cannot connect to postgres://messnetz:s3cr:et@db.example:5432/messnetz?sslmode=require"
            ),
            "store.url: cannot connect to postgres://messnetz:<not shown>@db.example:5432/messnetz?sslmode=require"
        );
        assert_eq!(hide_url_passwords("postgres://u@h/db and http://h:80/x"), "postgres://u@h/db and http://h:80/x");
        assert_eq!(hide_url_passwords("  3 | url = \"postgres://u:pw@h\""), "  3 | url = \"postgres://u:<not shown>@h\"");
        assert_eq!(
            redact_source_lines("  3 | url = \"postgres://u:pw@h/db\" x"),
            "  3 | url = \"postgres://u:<not shown>@h/db\" x"
        );
    }

    #[test]
    fn secret_keys_are_recognised_and_files_are_not() {
        for k in ["password", "mqtt.password", "influxdb.token", "admin.tokens[0].hash", "app_s_key", "AppSKey", "client_secret"]
        {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["port", "lorawan.keys_file", "client_key_file", "mqtt.username", "max_points"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn quoted_lines_lose_secret_values_and_keyless_lines() {
        let err = "TOML parse error at line 3, column 29\n  |\n3 | password = \"s3cr3t word\n  |                             ^\ninvalid basic string\n";
        let shown = redact_source_lines(err);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("line 3, column 29") && shown.contains("3 | password = <value not shown"), "{shown}");
        let shown = redact_source_lines("  |\n7 | port = \"x\"\n  | ^\n");
        assert!(shown.contains("7 | port = \"x\""), "{shown}");
        let shown = redact_source_lines("4 | username = \"u\" password = \"hunter2\"\n  |     ^\n");
        assert!(!shown.contains("hunter2") && shown.contains("4 | username = <value not shown"), "{shown}");
        let shown = redact_source_lines("12 | rest of a \"\"\"multi-line secret\n   |  ^\n");
        assert!(!shown.contains("multi-line secret"), "{shown}");
    }

    #[test]
    fn values_in_messages_are_left_out() {
        assert_eq!(
            redact_values("invalid type: integer `123456`, expected a string"),
            "invalid type: integer <not shown>, expected a string"
        );
        assert_eq!(redact_values("invalid type: string \"abc\", expected u16"), "invalid type: string <not shown>, expected u16");
    }
}
