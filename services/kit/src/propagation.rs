//! W3C trace context (`traceparent`, `tracestate`) across services and events.
//!
//! With an exporter (the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`), a request's span takes
//! the incoming context as its remote parent, and outbound calls and events carry the context of
//! the span that is current. Without one, the incoming headers travel on unchanged: a service
//! with tracing off does not cut a trace in two, and pays only a header lookup per request.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::http::HeaderMap;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Set once an exporter is installed (see [`crate::telemetry::init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[cfg(feature = "otlp")]
pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether this process exports spans (and so makes its own span contexts).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A trace context as it travels: the values of the two W3C headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A context from stored or received values; `None` unless `traceparent` is well formed.
    pub fn new(traceparent: Option<String>, tracestate: Option<String>) -> Option<Self> {
        let context = Self {
            traceparent: traceparent?,
            tracestate: tracestate.filter(|s| !s.is_empty()),
        };
        context.trace_id().is_some().then_some(context)
    }

    /// The context a request (or a message) came with, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::from_named_headers(headers, TRACEPARENT, TRACESTATE)
    }

    /// [`TraceContext::from_headers`] under other header names (an event's context travelling
    /// beside the delivery's own).
    pub fn from_named_headers(headers: &HeaderMap, parent: &str, state: &str) -> Option<Self> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self::new(text(parent), text(state))
    }

    /// The trace id (32 lowercase hex digits) of a version-00 `traceparent`
    /// (`00-<trace id>-<parent id>-<flags>`); `None` when malformed or all zeros.
    pub fn trace_id(&self) -> Option<&str> {
        trace_id_of(&self.traceparent)
    }

    /// Sets the two headers (named `parent` and `state`) on an outbound request.
    pub fn apply(
        &self,
        builder: reqwest::RequestBuilder,
        parent: &str,
        state: &str,
    ) -> reqwest::RequestBuilder {
        let builder = builder.header(parent, &self.traceparent);
        match &self.tracestate {
            Some(tracestate) => builder.header(state, tracestate),
            None => builder,
        }
    }
}

fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0');
    valid.then_some(trace_id)
}

/// The context work done now should carry (outbound calls, events written): the current span's
/// when exporting, otherwise the one the request came with.
pub fn current() -> Option<TraceContext> {
    #[cfg(feature = "otlp")]
    if exporting() {
        return otel::current();
    }
    crate::context::current_trace()
}

/// Adds [`current`] to an outbound request.
pub fn inject(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match current() {
        Some(context) => context.apply(builder, TRACEPARENT, TRACESTATE),
        None => builder,
    }
}

/// The span of one request: method, path, request id, and `trace_id` when the request is part
/// of a trace (so every log line inside it names the trace). When exporting, the incoming
/// context becomes its remote parent.
pub fn request_span(request: &Request) -> tracing::Span {
    let headers = request.headers();
    let id = headers
        .get(crate::context::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = request.uri().path();
    let span = if is_probe(path) {
        // Probes and scrapes, every few seconds per pod: below the exporter's level (info), so
        // they make no traces of their own; logged as before under SHOP_LOG=debug.
        tracing::debug_span!(
            "request",
            method = %request.method(),
            path,
            request_id = %id,
            trace_id = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            otel.kind = "server",
            method = %request.method(),
            path,
            request_id = %id,
            trace_id = tracing::field::Empty,
        )
    };
    #[cfg(feature = "otlp")]
    if exporting() {
        otel::adopt_parent(&span, headers);
        return span;
    }
    if let Some(trace_id) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
    {
        span.record("trace_id", trace_id);
    }
    span
}

fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics") || path.starts_with("/readyz")
}

/// Links `span` to `context` (the producer of an event, a request long gone): an OpenTelemetry
/// link, not a parent, so `span` stays in its own trace. Call it before the span is entered.
/// Without an exporter it only records `linked_trace_id` for the logs.
pub fn link(span: &tracing::Span, context: &TraceContext) {
    #[cfg(feature = "otlp")]
    if exporting() {
        otel::link(span, context);
    }
    if let Some(trace_id) = context.trace_id() {
        span.record("linked_trace_id", trace_id);
    }
}

/// Records the trace id of `span` as its `trace_id` field (declared empty), so the log lines
/// inside it name the trace too (the logs show the innermost span's fields): its own when
/// exporting, else the trace the request came with. A request's span does this itself.
pub fn record_trace_id(span: &tracing::Span) {
    #[cfg(feature = "otlp")]
    if exporting() {
        otel::record_trace_id(span);
        return;
    }
    if let Some(context) = crate::context::current_trace()
        && let Some(trace_id) = context.trace_id()
    {
        span.record("trace_id", trace_id);
    }
}

#[cfg(feature = "otlp")]
mod otel {
    use axum::http::HeaderMap;
    use opentelemetry::propagation::{Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{TRACEPARENT, TRACESTATE, TraceContext};

    #[derive(Default)]
    struct Headers {
        traceparent: Option<String>,
        tracestate: Option<String>,
    }

    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            match key {
                TRACEPARENT => self.traceparent = Some(value),
                TRACESTATE => self.tracestate = Some(value),
                _ => {}
            }
        }
    }

    struct Pair<'a>(&'a TraceContext);

    impl opentelemetry::propagation::Extractor for Pair<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => Some(&self.0.traceparent),
                TRACESTATE => self.0.tracestate.as_deref(),
                _ => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }

    pub fn current() -> Option<TraceContext> {
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut headers = Headers::default();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        TraceContext::new(headers.traceparent, headers.tracestate)
    }

    pub fn adopt_parent(span: &tracing::Span, headers: &HeaderMap) {
        if headers.contains_key(TRACEPARENT) {
            let parent = TraceContextPropagator::new()
                .extract(&opentelemetry_http::HeaderExtractor(headers));
            if parent.span().span_context().is_valid() {
                // Fails only for a span the filter disabled: then there is nothing to parent.
                let _ = span.set_parent(parent);
            }
        }
        record_trace_id(span);
    }

    pub fn link(span: &tracing::Span, context: &TraceContext) {
        let linked = TraceContextPropagator::new().extract(&Pair(context));
        span.add_link(linked.span().span_context().clone());
    }

    pub fn record_trace_id(span: &tracing::Span) {
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_parents_are_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::new(Some(good.into()), Some(String::new())).unwrap();
        assert_eq!(context.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            context.tracestate, None,
            "an empty tracestate is no tracestate"
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
        ] {
            assert!(TraceContext::new(Some(bad.into()), None).is_none(), "{bad}");
        }
    }
}
