//! Durations written as Go writes them ("30s", "1m30s", "1500ms"), as MetalLB's and Kubernetes'
//! fields are, and as CEL's `duration()` reads them.

use std::time::Duration;

/// The schema pattern for such a duration: what both this parser and CEL's `duration()` accept.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// The longest duration text a schema allows (a bound the API server's CEL cost estimate needs).
pub const MAX_LENGTH: usize = 32;

/// Parses "1h2m3.5s"-style text; `None` when it is not one (units ms, s, m, h; no sign).
pub fn parse(text: &str) -> Option<Duration> {
    if text.is_empty() || text.len() > MAX_LENGTH {
        return None;
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty()
            || number.starts_with('.')
            || number.ends_with('.')
            || number.matches('.').count() > 1
        {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let (scale, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += value * scale;
        rest = &tail[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Writes a duration the way [`parse`] reads it: whole seconds as "1h2m3s", else milliseconds.
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    if h > 0 {
        text.push_str(&format!("{h}h"));
    }
    if m > 0 {
        text.push_str(&format!("{m}m"));
    }
    if s > 0 || secs == 0 {
        text.push_str(&format!("{s}s"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("100ms"), Some(Duration::from_millis(100)));
        for bad in ["", "30", "s", "1d", "-1s", "1.s", ".5s", "1 s", "30S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["30s", "1m30s", "1h", "1500ms", "0s", "2h0m5s"] {
            let parsed = parse(text).unwrap_or_default();
            assert_eq!(parse(&format(parsed)), Some(parsed), "{text}");
        }
        assert_eq!(format(Duration::from_secs(3725)), "1h2m5s");
    }
}
