//! Durations as the command line and the config write them: `1500ms`, `30s`, `5m`, `1h`.

use std::time::Duration;

/// `1500ms`, `30s`, `5m` or `1h`; a number without a unit is an error (as in Go, and so
/// in Kubernetes flags: `5` could mean seconds or minutes). Arithmetic is checked: a
/// number too large for its unit is an error, never a wrapped value or a panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 30s, 5m or 1h"))?;
    let too_long = || format!("{s:?} is too long");
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        "" => return Err(format!("{s:?} has no unit: write {n}s, {n}m or {n}h")),
        _ => return Err(format!("unknown unit {unit:?}; use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}
