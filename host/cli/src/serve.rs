//! `converge serve`: the store, the runtime, the service and the HTTP API, wired together and served until
//! Ctrl-C or SIGTERM.

use crate::Exit;
use crate::load::{Load, executor, thread_count};
use crate::store::StoreArg;
use crate::telemetry::{LogFormat, Telemetry};
use converge_http::server::{ServerConfig, refuses_without_tokens};
use converge_http::{Auth, HttpConfig};
use converge_runtime::WasmRuntime;
use converge_sandbox::Sandbox;
use converge_service::{AdaptiveExecutor, Service, ServiceConfig, Watchers};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct Serve {
    #[command(flatten)]
    load: Load,
    #[command(flatten)]
    store: StoreArg,
    /// How long a running job's lease holds without renewal, in milliseconds (renewed every third of it). A job
    /// whose replica dies is taken over once its lease expires.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Runs of one job that may end without finishing (the process died, the lease expired) before the job is
    /// ended `agent_failed` (`attempts_exhausted`) instead of run again.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// On SIGTERM, how long running jobs may take to finish before they are given back, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    drain_ms: u64,
    /// This replica's name in the leases it holds (default: the host name and the process id).
    #[arg(long)]
    owner: Option<String>,
    /// Address to listen on. Anything but loopback needs `--token-file` (or `--insecure`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Bearer tokens: one `TENANT TOKEN` per line. Without it there is one tenant and no authentication.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve a non-loopback address without tokens.
    #[arg(long)]
    insecure: bool,
    /// Threads for agent calls (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Jobs run at once (default: twice the threads).
    #[arg(long)]
    workers: Option<usize>,
    /// Jobs admitted and waiting to start, at most; beyond it submissions get 503.
    #[arg(long, default_value_t = 4096)]
    queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Longest `?wait=` honoured, in seconds.
    #[arg(long, default_value_t = 60)]
    max_wait: u64,
    /// Time allowed for a request's headers to arrive, in milliseconds (slow clients are cut off).
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Open connections at most.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub(crate) fn serve(opts: &Serve) -> Result<u8, Exit> {
    // Shut down (the last spans sent) when this returns, whichever way.
    let mut telemetry = Telemetry::init(opts.log_format)?;
    let auth = match &opts.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?;
            Auth::parse(&text).map_err(|e| Exit::input(format!("{}: {e}", path.display())))?
        }
        None => Auth::none(),
    };
    if refuses_without_tokens(&opts.addr) && !auth.enabled() && !opts.insecure {
        return Err(Exit::input(format!(
            "refusing to serve {} without --token-file: anyone who can reach it could run jobs \
             (use a loopback address, give --token-file, or pass --insecure)",
            opts.addr
        )));
    }
    let threads = thread_count(opts.threads)?;
    let workers = opts.workers.unwrap_or(threads * 2);
    if workers == 0 || opts.queue == 0 {
        return Err(Exit::input("--workers and --queue must be at least 1"));
    }
    if opts.lease_ms < 100 || opts.max_attempts == 0 {
        return Err(Exit::input("--lease-ms must be at least 100 and --max-attempts at least 1"));
    }
    let watchers = Arc::new(Watchers::default());
    let store = crate::store::open(&opts.store, &opts.load.data, &watchers)?;
    // Guests run on the agent threads, on the workers (once jobs fill the cores), and on the threads that load
    // components and validate tools.
    let runtime = Arc::new(WasmRuntime::new(opts.load.registry(threads + workers + 2)?));
    let sandbox = Arc::clone(runtime.sandbox());
    let config = ServiceConfig {
        workers,
        queue: opts.queue,
        max_wait: Duration::from_secs(opts.max_wait),
        owner: opts.owner.clone().unwrap_or_else(owner),
        lease: Duration::from_millis(opts.lease_ms),
        max_attempts: opts.max_attempts,
        poll: Duration::from_millis((opts.lease_ms / 10).clamp(100, 1000)),
        span_parent: telemetry.span_parent(),
        ..ServiceConfig::default()
    };
    let executor = AdaptiveExecutor::new(executor(threads)?, threads);
    let svc = Service::new(Arc::clone(&store), runtime, executor, watchers, config)
        .map_err(|e| Exit::input(e.to_string()))?;
    let inventory = svc.inventory();
    for r in &inventory.rejected {
        tracing::warn!(file = %r.file, reason = %r.reason, "component rejected");
    }
    let resumed = svc.start().map_err(Exit::failure)?;
    let app =
        converge_http::app(Arc::clone(&svc), HttpConfig { auth, max_body: opts.max_body, ..HttpConfig::default() });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("converge-http")
        .enable_all()
        .build()
        .map_err(|e| Exit::failure(format!("starting the runtime: {e}")))?;
    let addr = opts.addr;
    let drain = Duration::from_millis(opts.drain_ms);
    let draining = Arc::clone(&svc);
    let served = tokio.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| Exit::input(format!("binding {addr}: {e}")))?;
        let local = listener.local_addr().map_err(Exit::failure)?;
        tracing::info!(
            addr = %local,
            agents = inventory.agents.len(),
            resumed,
            workers,
            threads,
            data = %opts.load.data.display(),
            "converge serving"
        );
        let server = ServerConfig {
            header_timeout: Duration::from_millis(opts.header_timeout_ms.max(1)),
            max_connections: opts.max_connections.max(1),
            ..ServerConfig::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        converge_http::server::serve(listener, app, server, async move {
            let _ = tx.send(stop(draining, drain, sandbox).await);
        })
        .await;
        match rx.await {
            Ok(Stop::SwapAppeared) => Err(Exit::failure(
                "swap was turned on after start: the sandbox's fast memory reset could leak one guest's pages to \
                 the next, so running jobs were given back; start converge again (it then uses the full reset)",
            )),
            _ => Ok::<(), Exit>(()),
        }
    });
    svc.shutdown();
    store.close();
    tracing::info!("stopped; unfinished jobs run again at the next start, or on another replica");
    telemetry.shutdown();
    served.map(|()| 0)
}

/// The default owner of this replica's leases: the host name and the process id.
fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{}-{}", if host.is_empty() { "converge" } else { host }, std::process::id())
}

/// Why the server stopped.
enum Stop {
    /// Ctrl-C, or SIGTERM after the drain.
    Asked,
    /// Swap was turned on while the sandbox used the fast memory reset.
    SwapAppeared,
}

/// Resolves when the server should stop: at once on Ctrl-C (running jobs run again at the next start or on
/// another replica); on SIGTERM after a drain — readiness fails, nothing more is claimed, running jobs get
/// `drain` to finish and the rest are given back — while the server still answers; and when swap is turned
/// on under a sandbox whose memory reset is not safe with swap, after a drain with no time to finish (every
/// running job is given back at once, to run again on a process that chooses the full reset).
async fn stop(svc: Arc<Service>, drain: Duration, sandbox: Arc<Sandbox>) -> Stop {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let swap = async {
        while !sandbox.swap_appeared() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        () = ctrl_c => Stop::Asked,
        () = term => {
            tracing::info!(drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX), "draining");
            let given_back = tokio::task::spawn_blocking(move || svc.drain(drain)).await.unwrap_or(0);
            tracing::info!(given_back, "drained");
            Stop::Asked
        },
        () = swap => {
            let given_back = tokio::task::spawn_blocking(move || svc.drain(Duration::ZERO)).await.unwrap_or(0);
            tracing::error!(given_back, "swap was turned on: running jobs given back, stopping");
            Stop::SwapAppeared
        },
    }
}
