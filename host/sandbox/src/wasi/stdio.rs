//! The guest's stdout and stderr: kept up to [`OUTPUT_CAP`](crate::OUTPUT_CAP) bytes each, the rest counted
//! and dropped (never a trap: a chatty guest is not a failing one). stdin is closed.

use crate::log::OUTPUT_CAP;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    lost: u64,
}

impl Capture {
    fn write(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = OUTPUT_CAP.saturating_sub(c.bytes.len());
        let keep = data.len().min(room);
        c.bytes.extend_from_slice(&data[..keep]);
        c.lost += (data.len() - keep) as u64;
    }

    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut c.bytes), std::mem::take(&mut c.lost))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Capture::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
