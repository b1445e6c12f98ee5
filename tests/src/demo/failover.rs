//! What a LAN client saw of a failover, from the ARP replies it heard: who answered when, the
//! gap between the old owner's last reply and the new owner's first, and a text timeline.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ferrolb_speaker::packet::MacAddr;
use ferrolb_speaker::probe::Heard;

/// One failover as the client saw it; times are from the moment the owner was lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub old: MacAddr,
    pub new: Option<MacAddr>,
    /// The old owner's last solicited reply (negative: before the loss).
    pub last_old_ms: Option<f64>,
    /// The new owner's first solicited reply.
    pub first_new_ms: Option<f64>,
    /// The new owner's first gratuitous announcement.
    pub first_gratuitous_ms: Option<f64>,
    /// Rounds in which two MACs answered.
    pub double_answers: usize,
}

impl Failover {
    /// The time the client had no answer: from the old owner's last reply to the new one's first.
    pub fn gap_ms(&self) -> Option<f64> {
        Some(self.first_new_ms? - self.last_old_ms?)
    }
}

fn offset_ms(at: Instant, lost_at: Instant) -> f64 {
    if at >= lost_at {
        (at - lost_at).as_secs_f64() * 1e3
    } else {
        -((lost_at - at).as_secs_f64() * 1e3)
    }
}

/// Reads the failover out of what the probe heard.
pub fn analyse(heard: &[Heard], old: MacAddr, lost_at: Instant) -> Failover {
    let last_old = heard
        .iter()
        .filter(|h| h.solicited && h.mac == old)
        .map(|h| h.at)
        .max();
    let first_new = heard
        .iter()
        .filter(|h| h.solicited && h.mac != old && last_old.is_none_or(|last| h.at > last))
        .min_by_key(|h| h.at);
    let new = first_new.map(|h| h.mac);
    let first_gratuitous = new.and_then(|mac| {
        heard
            .iter()
            .filter(|h| !h.solicited && h.mac == mac && h.at >= lost_at)
            .map(|h| h.at)
            .min()
    });
    Failover {
        old,
        new,
        last_old_ms: last_old.map(|at| offset_ms(at, lost_at)),
        first_new_ms: first_new.map(|h| offset_ms(h.at, lost_at)),
        first_gratuitous_ms: first_gratuitous.map(|at| offset_ms(at, lost_at)),
        double_answers: ferrolb_speaker::probe::double_answers(heard).len(),
    }
}

/// A timeline of who answered, one column per `bucket`, from `before` the loss to `after` it:
/// `#` the node answered in that slot, `.` it did not.
pub fn timeline(
    heard: &[Heard],
    lost_at: Instant,
    rows: &[(String, MacAddr)],
    before: Duration,
    after: Duration,
    bucket: Duration,
) -> String {
    let start = lost_at.checked_sub(before).unwrap_or(lost_at);
    let columns = ((before + after).as_nanos() / bucket.as_nanos().max(1)) as usize;
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, mac) in rows {
        let mut line = vec!['.'; columns];
        for h in heard.iter().filter(|h| h.solicited && h.mac == *mac) {
            if h.at < start {
                continue;
            }
            let column = ((h.at - start).as_nanos() / bucket.as_nanos().max(1)) as usize;
            if let Some(cell) = line.get_mut(column) {
                *cell = '#';
            }
        }
        let _ = writeln!(
            out,
            "  {name:>width$} {}",
            line.into_iter().collect::<String>()
        );
    }
    // A scale under the rows: the loss, then every second.
    let mut scale = vec![' '; columns];
    let per_second = (Duration::from_secs(1).as_nanos() / bucket.as_nanos().max(1)) as usize;
    let lost_column = (before.as_nanos() / bucket.as_nanos().max(1)) as usize;
    let mut labels = Vec::new();
    let mut column = lost_column;
    let mut second = 0;
    while column < columns {
        labels.push((
            column,
            if second == 0 {
                "^lost".to_owned()
            } else {
                format!("^{second}s")
            },
        ));
        column += per_second.max(1);
        second += 1;
    }
    for (column, label) in labels {
        for (i, c) in label.chars().enumerate() {
            if let Some(cell) = scale.get_mut(column + i) {
                *cell = c;
            }
        }
    }
    let _ = writeln!(
        out,
        "  {:>width$} {}",
        "",
        scale.into_iter().collect::<String>().trim_end()
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::IpAddr;

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    fn heard(at: Instant, mac: MacAddr, solicited: bool) -> Heard {
        static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Heard {
            at,
            // Each reply answers a round of its own, as the demo's probe asks every 10 ms.
            round: ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ip: "198.51.100.200".parse::<IpAddr>().unwrap(),
            mac,
            solicited,
            answers: None,
            arrived: None,
        }
    }

    #[test]
    fn the_gap_runs_from_the_old_owners_last_reply_to_the_new_ones_first() {
        let lost = Instant::now() + Duration::from_secs(1);
        let ms = |n: i64| {
            if n >= 0 {
                lost + Duration::from_millis(n as u64)
            } else {
                lost - Duration::from_millis((-n) as u64)
            }
        };
        let heard = vec![
            heard(ms(-20), mac(1), true),
            heard(ms(-10), mac(1), true),
            heard(ms(900), mac(2), false),
            heard(ms(910), mac(2), true),
            heard(ms(920), mac(2), true),
        ];
        let failover = analyse(&heard, mac(1), lost);
        assert_eq!(failover.new, Some(mac(2)));
        assert_eq!(failover.last_old_ms.map(f64::round), Some(-10.0));
        assert_eq!(failover.first_new_ms.map(f64::round), Some(910.0));
        assert_eq!(failover.first_gratuitous_ms.map(f64::round), Some(900.0));
        assert_eq!(failover.gap_ms().map(f64::round), Some(920.0));
        assert_eq!(failover.double_answers, 0);

        let lines = timeline(
            &heard,
            lost,
            &[("node-a".into(), mac(1)), ("node-b".into(), mac(2))],
            Duration::from_millis(200),
            Duration::from_millis(1800),
            Duration::from_millis(100),
        );
        let rows: Vec<&str> = lines.lines().collect();
        assert_eq!(rows[0], "  node-a .#..................");
        assert_eq!(rows[1], "  node-b ...........#........");
        assert_eq!(rows[2].trim_end(), "           ^lost     ^1s");
    }

    #[test]
    fn no_new_owner_means_no_gap() {
        let lost = Instant::now();
        let failover = analyse(&[heard(lost, mac(1), true)], mac(1), lost);
        assert_eq!(failover.new, None);
        assert_eq!(failover.gap_ms(), None);
    }
}
