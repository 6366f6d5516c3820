//! `wasi:http` (0.2.x) with nothing granted: a guest may build requests and responses — fields, methods,
//! paths, bodies it writes into nothing — but `outgoing-handler.handle` answers `HTTP-request-denied`, every
//! time, and records the attempt. There is no client here: no request can leave the host, whatever a guest or a
//! configuration does. Resources only a real HTTP exchange produces (incoming requests, responses, bodies,
//! futures) are never created, so a handle to one can only be forged, and using it traps.
//!
//! The interfaces come from `wit/deps/http.wit` (WASI 0.2.12); a component importing any 0.2.x links.

use crate::call::State;
use crate::clip;
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamResult};

mod bindings {
    #![allow(missing_docs, clippy::pedantic)]
    wasmtime::component::bindgen!({
        path: "wit",
        world: "converge:sandbox/refused-http",
        imports: { default: trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::sync::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http/types.fields": super::Fields,
            "wasi:http/types.outgoing-request": super::OutgoingRequest,
            "wasi:http/types.request-options": super::RequestOptions,
            "wasi:http/types.outgoing-response": super::OutgoingResponse,
            "wasi:http/types.outgoing-body": super::OutgoingBody,
            "wasi:http/types.incoming-request": super::Never,
            "wasi:http/types.response-outparam": super::Never,
            "wasi:http/types.incoming-response": super::Never,
            "wasi:http/types.incoming-body": super::Never,
            "wasi:http/types.future-trailers": super::Never,
            "wasi:http/types.future-incoming-response": super::Never,
        },
    });
}

use bindings::wasi::http::{outgoing_handler, types};
use types::{ErrorCode, HeaderError, Method, Scheme};

/// Add `wasi:http/types` and `wasi:http/outgoing-handler` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    type Data = wasmtime::component::HasSelf<State>;
    types::add_to_linker::<State, Data>(linker, &types::LinkOptions::default(), |s| s)?;
    outgoing_handler::add_to_linker::<State, Data>(linker, |s| s)?;
    Ok(())
}

/// Header entries shared by a request or response and the `headers` handles it gave out.
type Entries = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A `fields` resource: names lower-cased (they compare case-insensitively), in insertion order.
pub struct Fields {
    entries: Entries,
    mutable: bool,
}

/// An `outgoing-request` a guest builds.
pub struct OutgoingRequest {
    method: Method,
    path: Option<String>,
    scheme: Option<Scheme>,
    authority: Option<String>,
    headers: Entries,
    body_taken: bool,
}

/// A `request-options` resource: timeouts that nothing will wait for.
#[derive(Default)]
pub struct RequestOptions {
    connect: Option<u64>,
    first_byte: Option<u64>,
    between_bytes: Option<u64>,
}

/// An `outgoing-response` a guest builds (it has nowhere to send it).
pub struct OutgoingResponse {
    status: u16,
    headers: Entries,
    body_taken: bool,
}

/// An `outgoing-body`: what is written to it goes nowhere.
pub struct OutgoingBody {
    stream_taken: bool,
}

/// A resource only a real HTTP exchange creates; none is ever made.
pub enum Never {}

fn lock(entries: &Entries) -> std::sync::MutexGuard<'_, Vec<(String, Vec<u8>)>> {
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

fn valid(name: &str, value: Option<&[u8]>) -> Result<String, HeaderError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::InvalidSyntax)?;
    if let Some(v) = value {
        http::HeaderValue::from_bytes(v).map_err(|_| HeaderError::InvalidSyntax)?;
    }
    Ok(name.to_ascii_lowercase())
}

fn never<T>(what: &str) -> wasmtime::Result<T> {
    Err(wasmtime::Error::msg(format!("wasi:http: no {what} exists in this sandbox (outgoing HTTP is refused)")))
}

impl State {
    fn fields(&mut self, entries: Entries, mutable: bool) -> wasmtime::Result<Resource<Fields>> {
        self.table_push(Fields { entries, mutable })
    }

    fn mutable_fields(&mut self, f: &Resource<Fields>) -> wasmtime::Result<Result<Entries, HeaderError>> {
        let fields = self.table.get(f)?;
        Ok(if fields.mutable { Ok(Arc::clone(&fields.entries)) } else { Err(HeaderError::Immutable) })
    }
}

impl types::Host for State {
    fn http_error_code(
        &mut self,
        _err: Resource<wasmtime_wasi::p2::bindings::sync::io::error::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl types::HostFields for State {
    fn new(&mut self) -> wasmtime::Result<Resource<Fields>> {
        self.fields(Entries::default(), true)
    }

    fn from_list(&mut self, list: Vec<(String, Vec<u8>)>) -> wasmtime::Result<Result<Resource<Fields>, HeaderError>> {
        let mut entries = Vec::with_capacity(list.len());
        for (name, value) in list {
            match valid(&name, Some(&value)) {
                Ok(name) => entries.push((name, value)),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(self.fields(Arc::new(Mutex::new(entries)), true)?))
    }

    fn get(&mut self, f: Resource<Fields>, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        let name = name.to_ascii_lowercase();
        let entries =
            lock(&self.table.get(&f)?.entries).iter().filter(|(n, _)| *n == name).map(|e| e.1.clone()).collect();
        Ok(entries)
    }

    fn has(&mut self, f: Resource<Fields>, name: String) -> wasmtime::Result<bool> {
        let name = name.to_ascii_lowercase();
        Ok(lock(&self.table.get(&f)?.entries).iter().any(|(n, _)| *n == name))
    }

    fn set(
        &mut self,
        f: Resource<Fields>,
        name: String,
        values: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let entries = match self.mutable_fields(&f)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let mut checked = Vec::with_capacity(values.len());
        for v in values {
            match valid(&name, Some(&v)) {
                Ok(n) => checked.push((n, v)),
                Err(e) => return Ok(Err(e)),
            }
        }
        let name = name.to_ascii_lowercase();
        let mut entries = lock(&entries);
        entries.retain(|(n, _)| *n != name);
        entries.extend(checked);
        Ok(Ok(()))
    }

    fn delete(&mut self, f: Resource<Fields>, name: String) -> wasmtime::Result<Result<(), HeaderError>> {
        let entries = match self.mutable_fields(&f)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let name = match valid(&name, None) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        lock(&entries).retain(|(n, _)| *n != name);
        Ok(Ok(()))
    }

    fn append(
        &mut self,
        f: Resource<Fields>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let entries = match self.mutable_fields(&f)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        match valid(&name, Some(&value)) {
            Ok(name) => {
                lock(&entries).push((name, value));
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn entries(&mut self, f: Resource<Fields>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        Ok(lock(&self.table.get(&f)?.entries).clone())
    }

    fn clone(&mut self, f: Resource<Fields>) -> wasmtime::Result<Resource<Fields>> {
        let copy = lock(&self.table.get(&f)?.entries).clone();
        self.fields(Arc::new(Mutex::new(copy)), true)
    }

    fn drop(&mut self, f: Resource<Fields>) -> wasmtime::Result<()> {
        self.table.delete(f)?;
        Ok(())
    }
}

impl types::HostOutgoingRequest for State {
    fn new(&mut self, headers: Resource<Fields>) -> wasmtime::Result<Resource<OutgoingRequest>> {
        let headers = self.table.delete(headers)?.entries;
        self.table_push(OutgoingRequest {
            method: Method::Get,
            path: None,
            scheme: None,
            authority: None,
            headers,
            body_taken: false,
        })
    }

    fn body(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Result<Resource<OutgoingBody>, ()>> {
        let req = self.table.get_mut(&r)?;
        if std::mem::replace(&mut req.body_taken, true) {
            return Ok(Err(()));
        }
        Ok(Ok(self.table_push(OutgoingBody { stream_taken: false })?))
    }

    fn method(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Method> {
        Ok(self.table.get(&r)?.method.clone())
    }

    fn set_method(&mut self, r: Resource<OutgoingRequest>, method: Method) -> wasmtime::Result<Result<(), ()>> {
        if let Method::Other(m) = &method
            && http::Method::from_bytes(m.as_bytes()).is_err()
        {
            return Ok(Err(()));
        }
        self.table.get_mut(&r)?.method = method;
        Ok(Ok(()))
    }

    fn path_with_query(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&r)?.path.clone())
    }

    fn set_path_with_query(
        &mut self,
        r: Resource<OutgoingRequest>,
        path: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&r)?.path = path;
        Ok(Ok(()))
    }

    fn scheme(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Option<Scheme>> {
        Ok(self.table.get(&r)?.scheme.clone())
    }

    fn set_scheme(&mut self, r: Resource<OutgoingRequest>, scheme: Option<Scheme>) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&r)?.scheme = scheme;
        Ok(Ok(()))
    }

    fn authority(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&r)?.authority.clone())
    }

    fn set_authority(
        &mut self,
        r: Resource<OutgoingRequest>,
        authority: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&r)?.authority = authority;
        Ok(Ok(()))
    }

    fn headers(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<Resource<Fields>> {
        let entries = Arc::clone(&self.table.get(&r)?.headers);
        self.fields(entries, false)
    }

    fn drop(&mut self, r: Resource<OutgoingRequest>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostRequestOptions for State {
    fn new(&mut self) -> wasmtime::Result<Resource<RequestOptions>> {
        self.table_push(RequestOptions::default())
    }

    fn connect_timeout(&mut self, o: Resource<RequestOptions>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&o)?.connect)
    }

    fn set_connect_timeout(&mut self, o: Resource<RequestOptions>, d: Option<u64>) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&o)?.connect = d;
        Ok(Ok(()))
    }

    fn first_byte_timeout(&mut self, o: Resource<RequestOptions>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&o)?.first_byte)
    }

    fn set_first_byte_timeout(
        &mut self,
        o: Resource<RequestOptions>,
        d: Option<u64>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&o)?.first_byte = d;
        Ok(Ok(()))
    }

    fn between_bytes_timeout(&mut self, o: Resource<RequestOptions>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&o)?.between_bytes)
    }

    fn set_between_bytes_timeout(
        &mut self,
        o: Resource<RequestOptions>,
        d: Option<u64>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&o)?.between_bytes = d;
        Ok(Ok(()))
    }

    fn drop(&mut self, o: Resource<RequestOptions>) -> wasmtime::Result<()> {
        self.table.delete(o)?;
        Ok(())
    }
}

impl types::HostOutgoingResponse for State {
    fn new(&mut self, headers: Resource<Fields>) -> wasmtime::Result<Resource<OutgoingResponse>> {
        let headers = self.table.delete(headers)?.entries;
        self.table_push(OutgoingResponse { status: 200, headers, body_taken: false })
    }

    fn status_code(&mut self, r: Resource<OutgoingResponse>) -> wasmtime::Result<u16> {
        Ok(self.table.get(&r)?.status)
    }

    fn set_status_code(&mut self, r: Resource<OutgoingResponse>, status: u16) -> wasmtime::Result<Result<(), ()>> {
        if http::StatusCode::from_u16(status).is_err() {
            return Ok(Err(()));
        }
        self.table.get_mut(&r)?.status = status;
        Ok(Ok(()))
    }

    fn headers(&mut self, r: Resource<OutgoingResponse>) -> wasmtime::Result<Resource<Fields>> {
        let entries = Arc::clone(&self.table.get(&r)?.headers);
        self.fields(entries, false)
    }

    fn body(&mut self, r: Resource<OutgoingResponse>) -> wasmtime::Result<Result<Resource<OutgoingBody>, ()>> {
        let resp = self.table.get_mut(&r)?;
        if std::mem::replace(&mut resp.body_taken, true) {
            return Ok(Err(()));
        }
        Ok(Ok(self.table_push(OutgoingBody { stream_taken: false })?))
    }

    fn drop(&mut self, r: Resource<OutgoingResponse>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl types::HostOutgoingBody for State {
    fn write(&mut self, b: Resource<OutgoingBody>) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let body = self.table.get_mut(&b)?;
        if std::mem::replace(&mut body.stream_taken, true) {
            return Ok(Err(()));
        }
        let stream: DynOutputStream = Box::new(Nowhere);
        Ok(Ok(self.table.push_child(stream, &b)?))
    }

    fn finish(
        &mut self,
        b: Resource<OutgoingBody>,
        trailers: Option<Resource<Fields>>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if let Some(t) = trailers {
            self.table.delete(t)?;
        }
        self.table.delete(b)?;
        Ok(Ok(()))
    }

    fn drop(&mut self, b: Resource<OutgoingBody>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl types::HostIncomingRequest for State {
    fn method(&mut self, _: Resource<Never>) -> wasmtime::Result<Method> {
        never("incoming request")
    }

    fn path_with_query(&mut self, _: Resource<Never>) -> wasmtime::Result<Option<String>> {
        never("incoming request")
    }

    fn scheme(&mut self, _: Resource<Never>) -> wasmtime::Result<Option<Scheme>> {
        never("incoming request")
    }

    fn authority(&mut self, _: Resource<Never>) -> wasmtime::Result<Option<String>> {
        never("incoming request")
    }

    fn headers(&mut self, _: Resource<Never>) -> wasmtime::Result<Resource<Fields>> {
        never("incoming request")
    }

    fn consume(&mut self, _: Resource<Never>) -> wasmtime::Result<Result<Resource<Never>, ()>> {
        never("incoming request")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("incoming request")
    }
}

impl types::HostResponseOutparam for State {
    fn send_informational(
        &mut self,
        _: Resource<Never>,
        _: u16,
        _: Resource<Fields>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        never("response outparam")
    }

    fn set(&mut self, _: Resource<Never>, _: Result<Resource<OutgoingResponse>, ErrorCode>) -> wasmtime::Result<()> {
        never("response outparam")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("response outparam")
    }
}

impl types::HostIncomingResponse for State {
    fn status(&mut self, _: Resource<Never>) -> wasmtime::Result<u16> {
        never("incoming response")
    }

    fn headers(&mut self, _: Resource<Never>) -> wasmtime::Result<Resource<Fields>> {
        never("incoming response")
    }

    fn consume(&mut self, _: Resource<Never>) -> wasmtime::Result<Result<Resource<Never>, ()>> {
        never("incoming response")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("incoming response")
    }
}

impl types::HostIncomingBody for State {
    fn stream(
        &mut self,
        _: Resource<Never>,
    ) -> wasmtime::Result<Result<Resource<wasmtime_wasi::p2::DynInputStream>, ()>> {
        never("incoming body")
    }

    fn finish(&mut self, _: Resource<Never>) -> wasmtime::Result<Resource<Never>> {
        never("incoming body")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("incoming body")
    }
}

type Trailers = Option<Result<Result<Option<Resource<Fields>>, ErrorCode>, ()>>;

impl types::HostFutureTrailers for State {
    fn subscribe(&mut self, _: Resource<Never>) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        never("trailers")
    }

    fn get(&mut self, _: Resource<Never>) -> wasmtime::Result<Trailers> {
        never("trailers")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("trailers")
    }
}

type Response = Option<Result<Result<Resource<Never>, ErrorCode>, ()>>;

impl types::HostFutureIncomingResponse for State {
    fn subscribe(&mut self, _: Resource<Never>) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        never("incoming response")
    }

    fn get(&mut self, _: Resource<Never>) -> wasmtime::Result<Response> {
        never("incoming response")
    }

    fn drop(&mut self, _: Resource<Never>) -> wasmtime::Result<()> {
        never("incoming response")
    }
}

impl outgoing_handler::Host for State {
    fn handle(
        &mut self,
        request: Resource<OutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> wasmtime::Result<Result<Resource<Never>, ErrorCode>> {
        if let Some(o) = options {
            self.table.delete(o)?;
        }
        let req = self.table.delete(request)?;
        let method = match &req.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(m) => clip(m, 32),
        };
        let scheme = match &req.scheme {
            Some(Scheme::Http) | None => "http",
            Some(Scheme::Https) => "https",
            Some(Scheme::Other(s)) => clip(s, 16),
        };
        let uri =
            format!("{scheme}://{}{}", req.authority.as_deref().unwrap_or(""), req.path.as_deref().unwrap_or("/"));
        self.attempt(format!("http: tried {method} {}; denied", clip(&uri, 256)));
        Ok(Err(ErrorCode::HttpRequestDenied))
    }
}

/// An output stream that takes everything and keeps nothing.
struct Nowhere;

impl OutputStream for Nowhere {
    fn write(&mut self, _bytes: Bytes) -> StreamResult<()> {
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
impl Pollable for Nowhere {
    async fn ready(&mut self) {}
}
