//! The ways out of the sandbox — files, environment, sockets, name lookup — each replaced by a function that
//! records the attempt and refuses it. WASI served with nothing granted would refuse them too, but silently;
//! tool validation lists what a tool tried (SPEC §6) and agent traces log it.

use super::{WASI, ready};
use crate::call::State;
use crate::clip;
use wasmtime::component::{Linker, Resource};

/// Shadow the ambient functions on `linker`.
pub(super) fn shadow(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, IpAddressFamily};
    type Cx<'a> = wasmtime::StoreContextMut<'a, State>;
    let family = |f: IpAddressFamily| match f {
        IpAddressFamily::Ipv4 => "IPv4",
        IpAddressFamily::Ipv6 => "IPv6",
    };
    linker.instance(&format!("wasi:filesystem/preopens@{WASI}"))?.func_wrap(
        "get-directories",
        |mut cx: Cx<'_>, (): ()| {
            cx.data_mut().attempt("filesystem: asked for the preopened directories (none are granted)".into());
            Ok((Vec::<(Resource<wasmtime_wasi::filesystem::Descriptor>, String)>::new(),))
        },
    )?;
    linker.instance(&format!("wasi:cli/environment@{WASI}"))?.func_wrap(
        "get-environment",
        |mut cx: Cx<'_>, (): ()| {
            cx.data_mut().attempt("environment: read the environment variables (none are granted)".into());
            Ok((Vec::<(String, String)>::new(),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/tcp-create-socket@{WASI}"))?.func_wrap(
        "create-tcp-socket",
        move |mut cx: Cx<'_>, (f,): (IpAddressFamily,)| {
            cx.data_mut().attempt(format!("sockets: tried to create a TCP socket ({}); denied", family(f)));
            Ok((Err::<Resource<wasmtime_wasi::p2::TcpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/udp-create-socket@{WASI}"))?.func_wrap(
        "create-udp-socket",
        move |mut cx: Cx<'_>, (f,): (IpAddressFamily,)| {
            cx.data_mut().attempt(format!("sockets: tried to create a UDP socket ({}); denied", family(f)));
            Ok((Err::<Resource<wasmtime_wasi::p2::UdpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    // Name lookup, with a stream type of its own: no stream is ever created.
    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{WASI}"))?;
    lookup.resource("resolve-address-stream", wasmtime::component::ResourceType::host::<NoStream>(), |_, _| Ok(()))?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut cx: Cx<'_>, (_network, name): (Resource<wasmtime_wasi::p2::Network>, String)| {
            cx.data_mut().attempt(format!("sockets: tried to look up the name {}; denied", clip(&name, 253)));
            Ok((Err::<Resource<NoStream>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |_cx: Cx<'_>, (_stream,): (Resource<NoStream>,)| Ok((Err::<Option<IpAddress>, _>(ErrorCode::InvalidState),)),
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut cx: Cx<'_>, (_stream,): (Resource<NoStream>,)| Ok((ready(&mut cx.data_mut().table)?,)),
    )?;
    Ok(())
}

/// The name-lookup stream of the shadowed `ip-name-lookup`; never created.
struct NoStream;
