//! `wasi:http` with every outgoing request refused (`HTTP-request-denied`) and recorded as an attempt. The types
//! are wasmtime-wasi-http's; no request ever leaves the host.

use super::MAX_ATTEMPTS;
use crate::call::State;
use crate::clip;
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Refuses every outgoing HTTP request, and records it.
#[derive(Default)]
pub(crate) struct DenyHttp(pub(crate) Vec<String>);

type HttpResponse = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = HttpResponse> + Send> {
        if self.0.len() < MAX_ATTEMPTS {
            let uri = request.uri().to_string();
            self.0.push(format!("http: tried {} {}; denied", request.method(), clip(&uri, 256)));
        }
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
