//! Log output: human-readable lines by default, JSON lines on request, both on stderr.

use std::io::Write;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line, with the event's fields at the top level.
    Json,
}

/// Installs the global subscriber. `filter` uses the `RUST_LOG` syntax, such as
/// `info,ferry_ssh=debug`. Libraries that log through the `log` crate (russh, dav-server,
/// libunftp) are captured too.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(OneLinePerEvent {
            keep_escape: std::io::stderr().is_terminal(),
        })
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Writes each log event as exactly one line on stderr. Control characters inside an event
/// (a line break in a file name a client chose, say) are escaped, so no text from a client
/// can begin a line of its own and pass for a log line of Ferry's to a reader such as
/// fail2ban. Fields should still be escaped where they are logged; this is the last guard.
struct OneLinePerEvent {
    /// Keep `ESC`, for the formatter's colours on a terminal.
    keep_escape: bool,
}

impl<'a> MakeWriter<'a> for OneLinePerEvent {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            text: Vec::with_capacity(256),
            keep_escape: self.keep_escape,
        }
    }
}

/// One event's text, written to stderr when the formatter drops it.
struct EventBuffer {
    text: Vec<u8>,
    keep_escape: bool,
}

impl Write for EventBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let line = escape_controls(&self.text, self.keep_escape);
        // Losing a log line because stderr is closed is not worth a panic.
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

/// Escapes every control character except tabs, a final line break and, when `keep_escape`
/// is set, `ESC`.
fn escape_controls(event: &[u8], keep_escape: bool) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut out = Vec::with_capacity(body.len() + 1);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(byte),
            0x1b if keep_escape => out.push(byte),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_line_break_escaped() {
        let line = escape_controls(b"WARN x user=a\n2026 WARN ferry::login: forged\n", false);
        assert_eq!(
            line,
            b"WARN x user=a\\n2026 WARN ferry::login: forged\n".to_vec()
        );
    }

    #[test]
    fn other_controls_escaped() {
        assert_eq!(
            escape_controls(b"a\0b\rc\x1b[", false),
            b"a\\x00b\\rc\\x1b[\n".to_vec()
        );
        assert_eq!(escape_controls(b"\x1b[2m", true), b"\x1b[2m\n".to_vec());
    }
}
