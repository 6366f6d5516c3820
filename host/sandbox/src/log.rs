//! The `converge:agent/log` capability, and the capped record of what a call said: log lines first, then what
//! it wrote to stdout and stderr. A chatty guest is capped, never failed.

use crate::bindings::{log, types};
use crate::call::State;
use crate::clip;
use crate::wasi::Capture;

/// Captured output per call (log lines plus stdout and stderr), in bytes; the rest is counted, not kept.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Log lines kept per call.
const MAX_LOG_LINES: usize = 256;
/// Longest log line kept, in bytes.
pub(crate) const MAX_LINE: usize = 1024;

#[derive(Default)]
pub(crate) struct Logs {
    lines: Vec<String>,
    bytes: usize,
    dropped: u64,
}

impl Logs {
    pub(crate) fn push(&mut self, line: String) {
        if self.lines.len() >= MAX_LOG_LINES || self.bytes + line.len() > OUTPUT_CAP {
            self.dropped += 1;
            return;
        }
        self.bytes += line.len();
        self.lines.push(line);
    }

    pub(crate) fn capture(&mut self, stream: &str, capture: &Capture) {
        let (bytes, lost) = capture.take();
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            self.push(format!("{stream}: {}", clip(line, MAX_LINE)));
        }
        if lost > 0 {
            self.push(format!("{stream}: {lost} more bytes not kept (cap {OUTPUT_CAP} bytes)"));
        }
    }

    pub(crate) fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            let n = self.dropped;
            self.lines.push(format!("{n} more lines not kept (cap {MAX_LOG_LINES} lines, {OUTPUT_CAP} bytes)"));
        }
        self.lines
    }
}

impl log::Host for State {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        self.charge(message.len())?;
        let level = match level {
            types::Level::Trace => "trace",
            types::Level::Debug => "debug",
            types::Level::Info => "info",
            types::Level::Warn => "warn",
            types::Level::Error => "error",
        };
        self.logs.push(format!("{level}: {}", clip(&message, MAX_LINE)));
        Ok(())
    }
}
