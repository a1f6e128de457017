//! A zygote's stdout and stderr, seen from the daemon: logged line by line
//! (cut and rate-limited so a chatty function cannot flood the daemon's
//! log), with the last lines kept for error messages.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

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
            match read_line_bounded(&mut lines, &mut buf, MAX_LINE).await {
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
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "fnhost::function_output", function = %function, "{line}");
                    tail.push(line);
                }
            }
        }
    });
    Ok(())
}

/// Reads one line into `buf`, keeping at most `max` bytes of it: the rest
/// of an over-long line is read and thrown away, so a function that writes
/// gigabytes without a newline costs the daemon `max` bytes, not gigabytes.
/// Returns how many bytes the line had (0 at the end of the output).
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_long_lines_are_cut_without_being_buffered_whole() {
        // 1 MiB without a newline, then a short line, through a small buffer.
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nshort\n");
        let mut reader = tokio::io::BufReader::with_capacity(8192, &input[..]);
        let mut buf = Vec::new();
        let n = read_line_bounded(&mut reader, &mut buf, 4096)
            .await
            .expect("read");
        assert_eq!(n, (1 << 20) + 1);
        assert_eq!(buf.len(), 4096, "only max bytes were kept");
        assert!(buf.capacity() < 64 << 10, "the line was never held whole");
        buf.clear();
        let n = read_line_bounded(&mut reader, &mut buf, 4096)
            .await
            .expect("read");
        assert_eq!((n, &buf[..]), (6, &b"short\n"[..]));
        buf.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf, 4096)
                .await
                .expect("eof"),
            0
        );
    }

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
