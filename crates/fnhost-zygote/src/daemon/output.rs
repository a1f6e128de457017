//! A zygote's stdout and stderr, seen from the daemon: logged line by line
//! (cut and rate-limited so a chatty function cannot flood the daemon's
//! log), with the last lines kept for error messages.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

/// How many output lines of a zygote are kept for error messages.
const OUTPUT_TAIL_LINES: usize = 20;
/// Longest output line logged; longer lines are cut.
const MAX_LINE: usize = 4096;
/// Most output lines per second a zygote (with all its clones) may log;
/// the rest is counted and dropped.
const MAX_LINES_PER_SECOND: u32 = 1000;

/// The last output lines of a zygote, shared with its forwarder.
#[derive(Debug, Clone, Default)]
pub(super) struct OutputTail(Arc<Mutex<VecDeque<String>>>);

impl OutputTail {
    fn push(&self, line: String) {
        let mut tail = self.0.lock().expect("output tail lock poisoned");
        if tail.len() == OUTPUT_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    /// The kept lines joined for an error message, or "no output".
    pub(super) fn text(&self) -> String {
        let lines = self.0.lock().expect("output tail lock poisoned");
        if lines.is_empty() {
            "no output".to_string()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }
}

/// Logs a zygote's stdout/stderr line by line (each cut at [`MAX_LINE`]
/// bytes, at most [`MAX_LINES_PER_SECOND`]), keeping the last lines in `tail`.
pub(super) fn forward_output(
    output: OwnedFd,
    function: Arc<str>,
    tail: OutputTail,
) -> io::Result<()> {
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver);
        let mut buf = Vec::new();
        let mut window = Instant::now();
        let (mut logged, mut dropped) = (0u32, 0u64);
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if window.elapsed() >= Duration::from_secs(1) {
                        window = Instant::now();
                        logged = 0;
                        dropped = 0;
                    }
                    if logged >= MAX_LINES_PER_SECOND {
                        dropped += 1;
                        if dropped == 1 {
                            tracing::warn!(function = %function, "function output over {MAX_LINES_PER_SECOND} lines/s; dropping lines for the rest of this second");
                        }
                        metrics::counter!("fnhost_function_output_dropped_lines_total", "function" => function.to_string()).increment(1);
                        continue;
                    }
                    logged += 1;
                    buf.truncate(MAX_LINE);
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "fnhost::function_output", function = %function, "{line}");
                    tail.push(line);
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let tail = OutputTail::default();
        assert_eq!(tail.text(), "no output");
        for i in 0..OUTPUT_TAIL_LINES + 2 {
            tail.push(format!("l{i}"));
        }
        let text = tail.text();
        assert!(text.starts_with("l2 | l3"), "{text}");
        assert!(
            text.ends_with(&format!("l{}", OUTPUT_TAIL_LINES + 1)),
            "{text}"
        );
    }
}
