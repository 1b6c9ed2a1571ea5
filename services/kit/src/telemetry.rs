//! Structured logs (JSON lines by default, readable text on request) and, with the `otlp` feature,
//! traces exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The sampler is the
//! SDK's, which reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` itself (default
//! `parentbased_always_on`); how trace context travels is in [`crate::propagation`].

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::env_or;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes what is still buffered.
#[must_use = "dropping the telemetry handle loses traces that are still buffered"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter, if there is one.
    pub async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.traces {
            // The SDK's shutdown blocks until the last batch is sent.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber. `SHOP_LOG` filters (`info` by default, `RUST_LOG` syntax);
/// `SHOP_LOG_FORMAT=text` switches to human-readable lines. With the `otlp` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. `http://otel-collector:4318`), spans are exported too.
/// Call it once, inside the tokio runtime.
pub fn init(service: &str) -> Telemetry {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    init_with(service, endpoint.as_deref())
}

/// [`init`] with the OTLP endpoint given rather than read from the environment.
pub fn init_with(service: &str, otlp_endpoint: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_new(env_or("SHOP_LOG", "info,sqlx=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs: Box<dyn Layer<Registry> + Send + Sync> =
        if env_or(shop_contracts::env::LOG_FORMAT, "json") == "text" {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed()
        };
    #[cfg(feature = "otlp")]
    let (traces_layer, traces) =
        match otlp_endpoint.map(|endpoint| otlp::tracer_provider(service, endpoint)) {
            Some(Ok(provider)) => {
                use opentelemetry::trace::TracerProvider as _;
                let layer =
                    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));
                (Some(layer), Some(provider))
            }
            Some(Err(e)) => {
                eprintln!("{service}: traces are not exported: {e:#}");
                (None, None)
            }
            None => (None, None),
        };
    #[cfg(not(feature = "otlp"))]
    if otlp_endpoint.is_some() {
        eprintln!(
            "{service}: OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP support (feature `otlp`)"
        );
    }
    // Without an exporter, one global filter as ever: a disabled event or span costs nothing.
    // With one, each layer has its own: SHOP_LOG filters the logs, and spans at info and above
    // (requests, saga steps, event consumers; not every debug span a library opens) are exported
    // whatever the log level. (A per-layer filter beside a layer without one would enable every
    // callsite in the process, hence not per-layer filters always.)
    #[cfg(feature = "otlp")]
    let installed = match traces_layer {
        Some(traces_layer) => tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(traces_layer.with_filter(tracing_subscriber::filter::LevelFilter::INFO))
            .try_init()
            .is_ok(),
        None => tracing_subscriber::registry()
            .with(logs)
            .with(filter)
            .try_init()
            .is_ok(),
    };
    #[cfg(not(feature = "otlp"))]
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .try_init()
        .is_ok();
    if installed {
        #[cfg(feature = "otlp")]
        if traces.is_some() {
            crate::propagation::set_exporting();
        }
        tracing::debug!(service, "telemetry initialised");
    }
    Telemetry {
        #[cfg(feature = "otlp")]
        traces: if installed { traces } else { None },
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use anyhow::{Context, Result};
    use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Sends OTLP batches with the reqwest client the rest of the kit uses. The SDK exports from
    /// its own thread, outside tokio, so each request runs as a task on the service's runtime.
    #[derive(Debug)]
    struct RuntimeClient {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl HttpClient for RuntimeClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let task = self.runtime.spawn(async move {
                let (parts, body) = request.into_parts();
                let response = client
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                let mut out = Response::new(body);
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                Ok::<_, HttpError>(out)
            });
            task.await?
        }
    }

    pub fn tracer_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider> {
        let client = RuntimeClient {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .context("building the OTLP client")?,
            runtime: tokio::runtime::Handle::try_current()
                .context("telemetry must start inside the tokio runtime")?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .context("building the OTLP span exporter")?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build())
    }
}
