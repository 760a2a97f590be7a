//! MQTT topic filters: validation at start-up and matching a message's topic to its subscription.

/// Check a subscription filter against the MQTT rules (`#` last and alone in its level,
/// `+` alone in its level, `$share/GROUP/filter` for shared subscriptions).
pub fn validate_filter(filter: &str) -> Result<(), String> {
    let inner = strip_share(filter)?;
    if inner.is_empty() {
        return Err("expected a topic filter, got an empty string".into());
    }
    let levels: Vec<&str> = inner.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!("`#` must be the whole last level in {filter:?}"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`+` must be a whole level in {filter:?}"));
        }
    }
    Ok(())
}

/// The filter without a `$share/GROUP/` prefix: what topics are matched against.
pub fn strip_share(filter: &str) -> Result<&str, String> {
    match filter.strip_prefix("$share/") {
        None => Ok(filter),
        Some(rest) => match rest.split_once('/') {
            Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => Ok(inner),
            _ => Err(format!("shared subscription {filter:?} must look like $share/GROUP/filter")),
        },
    }
}

/// Does `topic` match `filter` (without a `$share` prefix)?
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated() {
        assert!(validate_filter("v3/+/devices/+/up").is_ok());
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("$share/g/a/+/b").is_ok());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b+").is_err());
        assert!(validate_filter("$share//a").is_err());
        assert!(validate_filter("").is_err());
    }

    #[test]
    fn topics_match_filters() {
        assert!(matches("v3/+/devices/+/up", "v3/app@ttn/devices/dev1/up"));
        assert!(!matches("v3/+/devices/+/up", "v3/app/devices/dev1/join"));
        assert!(!matches("v3/+/devices/+/up", "v3/app/devices/up"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(!matches("a/b", "a/b/c"));
    }
}
