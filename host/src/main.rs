//! The `converge` binary: `serve` the HTTP API, `run` one job in-process, list the `agents` that load,
//! `replay` a stored job.

use clap::{Parser, Subcommand};
use converge_engine::{CycleTrace, JobSpec, Outcome, RayonExecutor, Status};
use converge_host::cache::Cache;
use converge_host::service::http::{AgentsView, Auth, HttpConfig};
use converge_host::service::server::{ServerConfig, refuses_without_tokens};
use converge_host::service::{AdaptiveExecutor, Service, ServiceConfig, Watchers, load_stored};
use converge_host::store::{SqliteStore, Store};
use converge_host::tools::{Source, ToolSet};
use converge_host::{Catalog, HostError, Registry, Sandbox, SandboxConfig, job_seed, replay_job, run_job};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Converge: sandboxed WebAssembly agents that converge on a shared context.
#[derive(Parser)]
#[command(name = "converge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job in-process: a progress line per cycle on stderr, the result JSON on stdout.
    /// Exit 0 converged, 1 any other status, 2 bad input.
    Run {
        /// The job spec (SPEC §4 JSON).
        job: PathBuf,
        #[command(flatten)]
        load: Load,
        /// Threads for the parallel phase (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Serve the HTTP API (SPEC §5) with the embedded store under `--data`.
    Serve(Box<Serve>),
    /// Re-run a stored job from its spec and answers and compare `context_hash` and every tool call (tool,
    /// digest, input, outcome, output). Exit 0 identical, 1 different,
    /// 2 no such job or no result yet.
    Replay {
        /// The job id.
        job: String,
        #[command(flatten)]
        load: Load,
        /// Threads for the parallel phase (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Validate an untrusted tool (SPEC §6) and print the report as JSON. Exit 0 accepted, 1 rejected or
    /// needs review, 2 unusable input (an unreadable file, a malformed manifest). Nothing is stored: submit
    /// through `POST /v1/tools/validate` to make a tool callable.
    ValidateTool {
        /// The tool component.
        tool: PathBuf,
        /// The manifest: `{name, description, tests, requested, limits}`.
        #[arg(long)]
        manifest: PathBuf,
    },
    /// List what loads from the agents and tools directories, with hashes, and what is rejected and why.
    Agents {
        #[command(flatten)]
        load: Load,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Load {
    /// The agents directory: every `*.wasm` in it is loaded.
    #[arg(long, default_value = "agents")]
    agents: PathBuf,
    /// The trusted tools directory: every `*.wasm` in it is a tool agents may call (default: `<agents>/tools`,
    /// when it exists).
    #[arg(long)]
    tools: Option<PathBuf>,
    /// Where compiled components are cached (default: `<data>/cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The data directory.
    #[arg(long, default_value = ".converge")]
    data: PathBuf,
}

#[derive(clap::Args)]
struct Serve {
    #[command(flatten)]
    load: Load,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A failure with the exit code it maps to.
struct Exit(u8, String);

impl From<HostError> for Exit {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Engine(_) => Exit(1, e.to_string()),
            _ => Exit(2, e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { job, load, threads } => run(&job, &load, threads),
        Command::Agents { load, json } => agents(&load, json),
        Command::ValidateTool { tool, manifest } => validate_tool(&tool, &manifest),
        Command::Serve(opts) => serve(&opts),
        Command::Replay { job, load, threads } => replay(&job, &load, threads),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, message)) => {
            eprintln!("converge: {message}");
            ExitCode::from(code)
        }
    }
}

impl Load {
    /// The tools directory: the one given, or `<agents>/tools` when that exists.
    fn tools_dir(&self) -> Option<PathBuf> {
        self.tools.clone().or_else(|| Some(self.agents.join("tools")).filter(|d| d.is_dir()))
    }
}

/// Threads that run guest calls get room for an agent's stack and a tool's, nested (1 MiB of wasm each).
const GUEST_THREAD_STACK: usize = 8 << 20;

fn thread_count(threads: Option<usize>) -> Result<usize, Exit> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    if threads == 0 {
        return Err(Exit(2, "--threads must be at least 1".into()));
    }
    Ok(threads)
}

fn executor(threads: usize) -> Result<RayonExecutor, Exit> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("converge-agent-{i}"))
        .stack_size(GUEST_THREAD_STACK)
        .build()
        .map_err(|e| Exit(1, format!("starting {threads} threads: {e}")))?;
    Ok(RayonExecutor::new(Arc::new(pool)))
}

/// Pooling slots: every worker and every agent thread may hold an agent's instance and, nested, a tool's.
fn instances(threads: usize) -> u32 {
    u32::try_from(threads.saturating_mul(8)).unwrap_or(u32::MAX).max(32)
}

fn load(load: &Load, threads: usize) -> Result<(Arc<Sandbox>, Catalog), Exit> {
    let sandbox = Arc::new(Sandbox::new(SandboxConfig { instances: instances(threads), pooling: true })?);
    let cache = load.cache.clone().unwrap_or_else(|| load.data.join("cache"));
    let mut registry = Registry::new(Arc::clone(&sandbox), &load.agents, Some(cache)).with_tools(load.tools_dir());
    let catalog = registry.refresh()?;
    Ok((sandbox, catalog))
}

fn run(path: &PathBuf, opts: &Load, threads: Option<usize>) -> Result<u8, Exit> {
    let text = std::fs::read_to_string(path).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?;
    let spec = JobSpec::from_json(&text).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?;
    let threads = thread_count(threads)?;
    let (sandbox, catalog) = load(opts, threads)?;
    for r in &catalog.rejected {
        eprintln!("converge: skipped {}: {}", r.file, r.reason);
    }
    let executor = executor(threads)?;
    let id = format!("run-{}", &converge_engine::hex(&job_seed(&spec))[..16]);
    let result = run_job(&catalog, &sandbox, &spec, &id, &executor, progress)?;
    let json = serde_json::to_string_pretty(&result).map_err(|e| Exit(1, format!("encoding the result: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").map_err(|e| Exit(1, format!("writing the result: {e}")))?;
    eprintln!(
        "converge: {} after {} cycles, {} facts, context_hash {}",
        result.status,
        result.cycles,
        result.facts.len(),
        result.context_hash
    );
    Ok(u8::from(result.status != Status::Converged))
}

/// Each tool invocation of a cycle, as a replay compares it: cycle, agent, tool, digest, input and outcome, and
/// the SHA-256 of the output (time and fuel may differ, the rest may not).
/// The tools a replay may call: the trusted tools loaded now, and the validated tools the stored job called
/// (by the digest its trail recorded, from the store, of the job's tenant), in the order they were accepted. A validated tool accepted
/// since the run does not change the replay; one that no longer loads is reported, and its calls differ.
fn pinned_tools(
    store: &SqliteStore,
    sandbox: &Sandbox,
    catalog: &Catalog,
    opts: &Load,
    tenant: &str,
    traces: &[CycleTrace],
) -> Result<ToolSet, Exit> {
    let called: std::collections::BTreeSet<&str> =
        traces.iter().flat_map(|t| &t.agents).flat_map(|a| &a.tools).filter_map(|c| c.digest.as_deref()).collect();
    let mut records = store.tools(Some(tenant)).map_err(|e| Exit(2, e.to_string()))?;
    records.retain(|r| called.contains(r.digest.as_str()));
    records.sort_by_key(|r| r.accepted_ms);
    let cache = Cache::new(opts.cache.clone().unwrap_or_else(|| opts.data.join("cache")), sandbox.engine());
    let mut validated = Vec::new();
    for r in &records {
        match load_stored(store, sandbox, Some(&cache), r) {
            Ok(tool) => validated.push(Arc::new(tool)),
            Err(why) => eprintln!("converge: stored tool {}@{} not loaded: {why}", r.name, r.digest),
        }
    }
    let trusted = catalog.tools.iter().filter(|t| t.source == Source::Trusted).cloned();
    Ok(ToolSet::new(trusted, validated))
}

fn tool_calls(t: &CycleTrace) -> Vec<String> {
    use sha2::Digest;
    t.agents
        .iter()
        .flat_map(|a| {
            a.tools.iter().map(move |c| {
                let output = converge_engine::hex(&sha2::Sha256::digest(c.output.as_bytes()));
                format!(
                    "cycle {} {} -> {}@{} input {} {:?} output {output}",
                    t.cycle,
                    a.agent,
                    c.tool,
                    c.digest.as_deref().unwrap_or("-"),
                    c.input_sha256,
                    c.outcome
                )
            })
        })
        .collect()
}

fn progress(t: &CycleTrace) {
    let failed = t.agents.iter().filter(|a| matches!(a.outcome, Outcome::Failed(_))).count();
    eprintln!(
        "cycle {}: {} agents, +{} facts ({} duplicate, {} rejected), {} promoted, {} failed, {} questions -> {}",
        t.cycle,
        t.agents.len(),
        t.inserted,
        t.duplicates,
        t.rejected,
        t.promoted.len(),
        failed,
        t.questions.len(),
        t.status
    );
}

fn agents(opts: &Load, json: bool) -> Result<u8, Exit> {
    let (_sandbox, catalog) = load(opts, 1)?;
    if json {
        let value = AgentsView::from(&catalog);
        let text = serde_json::to_string_pretty(&value).map_err(|e| Exit(1, e.to_string()))?;
        println!("{text}");
        return Ok(0);
    }
    for (l, i) in catalog.agents() {
        println!(
            "agent      {:<24} {}  reads [{}] writes [{}]{}",
            l.name,
            &l.digest[..16],
            i.reads.join(", "),
            i.writes.join(", "),
            if i.required { " required" } else { "" }
        );
    }
    for (l, i) in catalog.invariants() {
        println!("invariant  {:<24} {}  {:?}", l.name, &l.digest[..16], i.class);
    }
    for t in catalog.tools.iter() {
        println!("tool       {:<24} {}  {:?}", t.name, &t.digest[..16], t.source);
    }
    for r in &catalog.rejected {
        println!("rejected   {:<24} {}", r.file, r.reason);
    }
    for r in &catalog.rejected_tools {
        println!("rejected   {:<24} {} (tools)", r.file, r.reason);
    }
    Ok(0)
}

fn validate_tool(tool: &PathBuf, manifest: &PathBuf) -> Result<u8, Exit> {
    use converge_host::tools::validate::{MAX_TOOL_BYTES, Manifest, validate};
    use std::io::Read;
    let text = std::fs::read(manifest).map_err(|e| Exit(2, format!("{}: {e}", manifest.display())))?;
    let manifest = Manifest::parse(&text).map_err(|e| Exit(2, format!("{}: {e}", manifest.display())))?;
    let file = std::fs::File::open(tool).map_err(|e| Exit(2, format!("{}: {e}", tool.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOOL_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Exit(2, format!("{}: {e}", tool.display())))?;
    let sandbox = Arc::new(Sandbox::new(SandboxConfig { instances: 4, pooling: true })?);
    let validated = validate(&sandbox, &bytes, &manifest);
    let text = serde_json::to_string_pretty(&validated.report).map_err(|e| Exit(1, e.to_string()))?;
    println!("{text}");
    Ok(u8::from(validated.report.verdict != converge_host::tools::Verdict::Accepted))
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

fn serve(opts: &Serve) -> Result<u8, Exit> {
    init_logs(opts.log_format);
    let auth = match &opts.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?;
            Auth::parse(&text).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?
        }
        None => Auth::none(),
    };
    if refuses_without_tokens(&opts.addr) && !auth.enabled() && !opts.insecure {
        return Err(Exit(
            2,
            format!(
                "refusing to serve {} without --token-file: anyone who can reach it could run jobs \
                 (use a loopback address, give --token-file, or pass --insecure)",
                opts.addr
            ),
        ));
    }
    let threads = thread_count(opts.threads)?;
    let workers = opts.workers.unwrap_or(threads * 2);
    if workers == 0 || opts.queue == 0 {
        return Err(Exit(2, "--workers and --queue must be at least 1".into()));
    }
    let watchers = Arc::new(Watchers::default());
    let hook = Arc::clone(&watchers);
    let store = SqliteStore::open(&opts.load.data, Some(Arc::new(move |e| hook.publish(e))))
        .map_err(|e| Exit(2, e.to_string()))?;
    let store: Arc<SqliteStore> = Arc::new(store);
    let sandbox = Arc::new(Sandbox::new(SandboxConfig { instances: instances(threads), pooling: true })?);
    let cache = opts.load.cache.clone().unwrap_or_else(|| opts.load.data.join("cache"));
    let registry =
        Registry::new(Arc::clone(&sandbox), &opts.load.agents, Some(cache)).with_tools(opts.load.tools_dir());
    let config = ServiceConfig { workers, queue: opts.queue, rescan: std::time::Duration::from_secs(2) };
    let executor = AdaptiveExecutor::new(executor(threads)?, threads);
    let svc = Service::new(Arc::clone(&store) as Arc<dyn Store>, sandbox, registry, executor, watchers, config)?;
    let catalog = svc.catalog();
    for r in &catalog.rejected {
        tracing::warn!(file = %r.file, reason = %r.reason, "component rejected");
    }
    let resumed = svc.start()?;
    let http = HttpConfig {
        max_body: opts.max_body,
        max_wait: std::time::Duration::from_secs(opts.max_wait),
        ..HttpConfig::default()
    };
    let app = converge_host::service::http::router(Arc::clone(&svc), auth, http);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("converge-http")
        .enable_all()
        .build()
        .map_err(|e| Exit(1, format!("starting the runtime: {e}")))?;
    let addr = opts.addr;
    let served = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| Exit(2, format!("binding {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| Exit(1, e.to_string()))?;
        tracing::info!(
            addr = %local,
            agents = catalog.agents().count(),
            resumed,
            workers,
            threads,
            data = %opts.load.data.display(),
            "converge serving"
        );
        let server = ServerConfig {
            header_timeout: std::time::Duration::from_millis(opts.header_timeout_ms.max(1)),
            max_connections: opts.max_connections.max(1),
            ..ServerConfig::default()
        };
        converge_host::service::server::serve(listener, app, server, shutdown_signal()).await;
        Ok::<(), Exit>(())
    });
    svc.shutdown();
    store.close();
    tracing::info!("stopped; unfinished jobs resume at the next start");
    served.map(|()| 0)
}

async fn shutdown_signal() {
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
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn replay(id: &str, opts: &Load, threads: Option<usize>) -> Result<u8, Exit> {
    let store = SqliteStore::open_existing(&opts.data).map_err(|e| Exit(2, e.to_string()))?;
    let record = store
        .job(None, id)
        .map_err(|e| Exit(2, e.to_string()))?
        .ok_or_else(|| Exit(2, format!("no job {id} in {}", opts.data.display())))?;
    let Some(stored_hash) = record.context_hash.clone() else {
        return Err(Exit(2, format!("job {id} is {} and has no result to compare yet", record.status)));
    };
    let answers = store.answers(id).map_err(|e| Exit(2, e.to_string()))?;
    let events = store.events(id, 0).map_err(|e| Exit(2, e.to_string()))?;
    let traces: Vec<CycleTrace> = events
        .iter()
        .filter(|e| e.kind == "cycle")
        .filter_map(|e| serde_json::from_str::<CycleTrace>(&e.data).ok())
        .collect();
    let stored_calls: Vec<String> = traces.iter().flat_map(tool_calls).collect();
    let spec = JobSpec::from_json(&record.spec).map_err(|e| Exit(2, format!("the stored spec of {id}: {e}")))?;
    let threads = thread_count(threads)?;
    let (sandbox, mut catalog) = load(opts, threads)?;
    catalog.tools = Arc::new(pinned_tools(&store, &sandbox, &catalog, opts, &record.tenant, &traces)?);
    store.close();
    let recorded: std::collections::BTreeMap<String, String> =
        record.components.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let mut changed = Vec::new();
    for (name, digest) in &recorded {
        match catalog.loaded.get(name) {
            Some(l) if &l.digest == digest => {}
            Some(l) => changed.push(format!(
                "{name}: recorded {}, loaded {}",
                &digest[..12.min(digest.len())],
                &l.digest[..12]
            )),
            None => changed.push(format!("{name}: recorded, not loaded now")),
        }
    }
    for c in &changed {
        eprintln!("converge: component changed since the run: {c}");
    }
    let cancel_at = (record.status == Status::Cancelled).then_some(record.cycles);
    let mut replayed_calls = Vec::new();
    let result = replay_job(&catalog, &sandbox, &spec, id, &executor(threads)?, &answers, cancel_at, |t| {
        replayed_calls.extend(tool_calls(t));
        progress(t);
    })?;
    let calls_identical = stored_calls == replayed_calls;
    let first_difference = stored_calls
        .iter()
        .zip(&replayed_calls)
        .position(|(a, b)| a != b)
        .or_else(|| (!calls_identical).then(|| stored_calls.len().min(replayed_calls.len())));
    let identical = result.context_hash == stored_hash && calls_identical;
    let report = serde_json::json!({
        "id": id,
        "identical": identical,
        "stored": {"status": record.status, "cycles": record.cycles, "context_hash": stored_hash},
        "replayed": {"status": result.status, "cycles": result.cycles, "context_hash": result.context_hash},
        "changed_components": changed,
        "tool_calls": {
            "identical": calls_identical,
            "stored": stored_calls.len(),
            "replayed": replayed_calls.len(),
            "first_difference": first_difference.map(|i| serde_json::json!({
                "stored": stored_calls.get(i),
                "replayed": replayed_calls.get(i),
            })),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Exit(1, e.to_string()))?);
    eprintln!(
        "converge: replay of {id}: {}",
        if identical {
            "identical context_hash and tool calls"
        } else if calls_identical {
            "context_hash DIFFERS"
        } else {
            "tool calls DIFFER"
        }
    );
    Ok(u8::from(!identical))
}
