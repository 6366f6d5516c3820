//! Logging into the job's trace, one function per level.
//!
//! Lines go to the host through `converge:agent/log`; the host caps how much one call may log. Prefer these to
//! `println!`: stdout is captured too, but without a level.

use crate::Level;

/// Record `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    crate::bindings::log::log(level, message.as_ref());
}

/// Record `message` at level `trace`.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Record `message` at level `debug`.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Record `message` at level `info`.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Record `message` at level `warn`.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Record `message` at level `error`.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
