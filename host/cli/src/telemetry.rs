//! Logs and traces (SPEC §8): the `tracing` subscriber, and the OTLP/HTTP export of its spans when the standard
//! OpenTelemetry variables ask for it.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK reads the rest of the standard variables
//! itself (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_BSP_*`). `OTEL_SERVICE_NAME` names the service (`converge` when unset).
//!
//! The batch processor exports from a thread of its own with the blocking HTTP client (the async client panics
//! there, and the simple processor blocks the caller on the network); [`Telemetry::shutdown`] sends what is still
//! queued before the process exits.
//!
//! What the exporter sees is chosen apart from the logs: every span of Converge's crates (`job`, `cycle`,
//! `agent`, `invariant`, `tool`, `merge`, whatever their level) and Converge's events at INFO and above, while
//! `RUST_LOG` keeps deciding what is logged.

use crate::Exit;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How long [`Telemetry::shutdown`] waits for the last batch to be sent.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// The format of the log lines on stderr.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Whether and where spans are exported, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Traces {
    /// Not exported, and why.
    Off(&'static str),
    /// Exported over OTLP/HTTP to the endpoint the SDK resolves (this one, or the generic one plus `/v1/traces`).
    Otlp {
        /// The variable that gave the endpoint.
        from: &'static str,
    },
}

/// Read the OpenTelemetry variables.
///
/// # Errors
/// A variable asks for an exporter or a protocol this build does not have (refused rather than ignored: the
/// operator expects traces to arrive).
pub(crate) fn traces(env: impl Fn(&str) -> Option<String>) -> Result<Traces, String> {
    let set = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Traces::Off("OTEL_SDK_DISABLED=true"));
    }
    if let Some(exporters) = set("OTEL_TRACES_EXPORTER") {
        let list: Vec<String> = exporters.split(',').map(|e| e.trim().to_ascii_lowercase()).collect();
        if list.iter().all(|e| e == "none") {
            return Ok(Traces::Off("OTEL_TRACES_EXPORTER=none"));
        }
        if let Some(other) = list.iter().find(|e| *e != "otlp" && *e != "none") {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other} is not supported: this build exports traces over OTLP only"
            ));
        }
    }
    let from = if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    } else if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    } else {
        return Ok(Traces::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"));
    };
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(protocol) = set(name) {
            if protocol != "http/protobuf" {
                return Err(format!(
                    "{name}={protocol} is not supported: this build exports OTLP over HTTP with protobuf \
                     (http/protobuf); point the endpoint at a collector's OTLP/HTTP port (4318)"
                ));
            }
            break;
        }
    }
    Ok(Traces::Otlp { from })
}

/// The installed subscriber's exporter, if any; shut it down before the process exits.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Install the subscriber: logs on stderr as `format` says, filtered by `RUST_LOG`; and the span export the
    /// environment asks for.
    ///
    /// # Errors
    /// The OpenTelemetry variables ask for what this build cannot do, or the exporter cannot be built (a bad
    /// endpoint).
    pub(crate) fn init(format: LogFormat) -> Result<Self, Exit> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,opentelemetry=warn")
        });
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
        let logs = match format {
            LogFormat::Text => logs.boxed(),
            LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
        };
        let traces = traces(|name| std::env::var(name).ok()).map_err(Exit::input)?;
        let provider = match traces {
            Traces::Off(_) => None,
            Traces::Otlp { .. } => Some(provider().map_err(Exit::input)?),
        };
        let export = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("converge"))
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target().starts_with("converge") && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
                }))
        });
        let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(export).try_init();
        match traces {
            Traces::Off(why) => tracing::debug!(why, "traces are not exported"),
            Traces::Otlp { from } => tracing::info!(endpoint = from, "traces exported over OTLP/HTTP"),
        }
        Ok(Self { provider })
    }

    /// Makes a `job` span the child of the trace a job was submitted under (when spans are exported).
    pub(crate) fn span_parent(&self) -> converge_service::SpanParent {
        if self.provider.is_none() {
            return converge_service::SpanParent::default();
        }
        converge_service::SpanParent(Some(Arc::new(|span: &tracing::Span, traceparent: &str| {
            let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
            if let Err(e) = span.set_parent(TraceContextPropagator::new().extract(&carrier)) {
                tracing::debug!(error = %e, "the job span keeps its own trace");
            }
        })))
    }

    /// Send the spans still queued (waiting at most a few seconds for the collector) and stop exporting.
    pub(crate) fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN)
        {
            eprintln!("converge: the last traces were not all exported: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The OTLP/HTTP exporter behind a batch processor, for this service.
fn provider() -> Result<SdkTracerProvider, String> {
    // `https://` collectors: rustls with ring (the exporter's HTTP client is built without a provider of its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP trace exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("converge");
    }
    let resource =
        resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

#[cfg(test)]
mod tests {
    use super::{Traces, traces};

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_standard_variables_decide_the_export() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(matches!(traces(with(&[])), Ok(Traces::Off(_))));
        assert!(matches!(traces(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), Ok(Traces::Off(_))));
        assert_eq!(traces(with(&[endpoint])), Ok(Traces::Otlp { from: "OTEL_EXPORTER_OTLP_ENDPOINT" }));
        assert_eq!(
            traces(with(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"), endpoint])),
            Ok(Traces::Otlp { from: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" })
        );
        assert_eq!(traces(with(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])), Ok(Traces::Off("OTEL_SDK_DISABLED=true")));
        assert!(matches!(traces(with(&[endpoint, ("OTEL_SDK_DISABLED", "false")])), Ok(Traces::Otlp { .. })));
        assert_eq!(
            traces(with(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])),
            Ok(Traces::Off("OTEL_TRACES_EXPORTER=none"))
        );
        assert!(matches!(traces(with(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")])), Ok(Traces::Otlp { .. })));
        assert!(matches!(
            traces(with(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])),
            Ok(Traces::Otlp { .. })
        ));
        // What this build cannot do is refused by name, not ignored.
        let err = traces(with(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(err.contains("OTEL_TRACES_EXPORTER=zipkin"), "{err}");
        let err = traces(with(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{err}");
        // The traces' own protocol wins over the generic one.
        assert!(matches!(
            traces(with(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ])),
            Ok(Traces::Otlp { .. })
        ));
    }
}
