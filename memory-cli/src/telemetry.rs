//! Where the process's traces go: log lines on stderr (`-v`, `RUST_LOG`) and, in a build with
//! the `otlp` feature and an endpoint set (`[telemetry] otlp_endpoint` or
//! `MEMORY_OTLP_ENDPOINT`), the INFO spans of the memory's crates exported to an OpenTelemetry
//! collector over OTLP/HTTP (protobuf), named after the `gen_ai` conventions (see
//! `memory_core::telemetry` and docs/TELEMETRY.md).

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed tracing. [`Telemetry::shutdown`] exports the spans still batched: call it
/// once the command is over, whatever its outcome.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// The stderr filter: `RUST_LOG` when set, else `warn`, `info` with `-v`, `debug` with `-vv`.
fn stderr_filter(verbose: u8) -> EnvFilter {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the process's tracing: stderr logs, plus the OTLP export to `otlp_endpoint` (a
/// base URL checked by the settings; only ever set in a build with the `otlp` feature).
#[cfg_attr(not(feature = "otlp"), allow(clippy::unnecessary_wraps))]
pub fn init(verbose: u8, otlp_endpoint: Option<&str>) -> Result<Telemetry> {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter(verbose));
    #[cfg(feature = "otlp")]
    let (spans, provider) = match otlp_endpoint {
        Some(url) => {
            let (layer, provider) = otlp::layer(url)?;
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let spans = {
        // The settings refuse an endpoint in a build without the exporter.
        debug_assert!(otlp_endpoint.is_none());
        None::<tracing_subscriber::layer::Identity>
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(spans)
        .try_init();
    Ok(Telemetry {
        #[cfg(feature = "otlp")]
        provider,
    })
}

impl Telemetry {
    /// Exports the spans still batched (a short-lived command's are all still there), waiting
    /// at most the export timeout. A failed export is a warning on stderr, never the
    /// command's error.
    #[cfg_attr(not(feature = "otlp"), allow(clippy::unused_self))]
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            errln!("warning: the spans could not all be exported over OTLP: {e}");
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use anyhow::{Context, Result};
    use opentelemetry::KeyValue;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
    use tracing::{Level, Subscriber};
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{Filtered, Targets};
    use tracing_subscriber::registry::LookupSpan;

    /// How long one export (one POST) may take: also the longest a command's exit waits for
    /// an unreachable collector.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The exported spans: INFO and above, of the memory's crates (`memory_core`,
    /// `memory_mcp`, ..., all starting with `memory`), never the HTTP client's or the
    /// exporter's own.
    fn exported() -> Targets {
        Targets::new().with_target("memory", Level::INFO)
    }

    /// The exporting layer, behind its filter.
    type SpanLayer<S> =
        Filtered<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>, Targets, S>;

    /// The layer exporting spans to the OTLP/HTTP receiver at `endpoint` (a base URL: the
    /// spans go to `{endpoint}/v1/traces`), and the provider whose shutdown flushes them.
    /// Nothing is sent anywhere else: the endpoint is set here, over any `OTEL_EXPORTER_OTLP_*`
    /// endpoint variable.
    pub(super) fn layer<S>(endpoint: &str) -> Result<(SpanLayer<S>, SdkTracerProvider)>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter to {endpoint}"))?;
        let mut resource = Resource::builder();
        // OTEL_SERVICE_NAME, when set, names the service instead.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("memory");
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("memory"))
            .with_threads(false)
            .with_filter(exported());
        Ok((layer, provider))
    }
}
