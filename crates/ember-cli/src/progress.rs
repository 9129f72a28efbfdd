//! A one-line progress bar on stderr: texts done, rate, ETA, redrawn in place with `\r`.
//!
//! Shown only when stderr is a terminal and the input is large (≥ [`MIN_TEXTS`] texts), so
//! pipes, logs and batch jobs see nothing of it; stdout never does.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Inputs smaller than this finish too soon for a bar to help.
pub const MIN_TEXTS: usize = 1000;

/// Redraws at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

const BAR_WIDTH: usize = 24;

pub struct Progress {
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar for `total` texts, drawn only if stderr is a terminal and `total ≥ MIN_TEXTS`.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            start: Instant::now(),
            last_draw: None,
            enabled: total >= MIN_TEXTS && std::io::stderr().is_terminal(),
        }
    }

    /// `done` texts of `total` are embedded.
    pub fn update(&mut self, done: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|last| now - last < REDRAW_EVERY && done < self.total)
        {
            return;
        }
        self.last_draw = Some(now);
        let line = progress_line(done, self.total, now - self.start);
        // A failed write to stderr is no reason to stop embedding.
        let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K");
    }

    /// Ends the bar's line, so what follows on stderr starts on a fresh one.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = writeln!(std::io::stderr().lock());
        }
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `[#######.........]  4,096/10,000 texts  41%  812 texts/s  ETA 0:07`
pub fn progress_line(done: usize, total: usize, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let eta = if done == total {
        format!("in {}", clock(seconds))
    } else if rate > 0.0 {
        format!("ETA {}", clock((total - done) as f64 / rate))
    } else {
        "ETA ?".to_owned()
    };
    format!(
        "[{}{}] {}/{} texts {:>3.0}%  {:.0} texts/s  {eta}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        thousands(done),
        thousands(total),
        fraction * 100.0,
        rate,
    )
}

/// `h:mm:ss`, or `m:ss` under an hour.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_count_rate_and_eta() {
        let line = progress_line(4_096, 10_000, Duration::from_secs(5));
        assert_eq!(
            line,
            "[#########...............] 4,096/10,000 texts  41%  819 texts/s  ETA 0:07"
        );
        let done = progress_line(1_234_567, 1_234_567, Duration::from_secs(3_725));
        assert!(done.starts_with(&format!("[{}]", "#".repeat(24))), "{done}");
        assert!(done.ends_with("1,234,567/1,234,567 texts 100%  331 texts/s  in 1:02:05"));
        assert!(progress_line(0, 5_000, Duration::ZERO).ends_with("0 texts/s  ETA ?"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
