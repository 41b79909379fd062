//! Prometheus metrics of the service (`GET /metrics`, text exposition format).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the service exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status code.
    pub requests: IntCounterVec,
    /// Request latency by route, seconds.
    pub latency: HistogramVec,
    /// Images per forward pass.
    pub batch_size: Histogram,
    /// Images waiting for the network.
    pub queue_depth: IntGauge,
    /// Verdicts given, by verdict (good, anomalous).
    pub verdicts: IntCounterVec,
    /// Reloads by outcome (ok, refused).
    pub reloads: IntCounterVec,
    /// 1 for the run being served, labelled with its identity and category.
    pub model: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("anodet".into()), None).unwrap_or_else(|_| Registry::new());
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0,
                ]),
            &["route"],
        );
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_size", "images per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        );
        let queue_depth = IntGauge::new("queue_depth", "images waiting for the network");
        let verdicts =
            IntCounterVec::new(Opts::new("verdicts_total", "verdicts given"), &["verdict"]);
        let reloads = IntCounterVec::new(
            Opts::new("reloads_total", "model reloads by outcome"),
            &["outcome"],
        );
        let model = IntGaugeVec::new(
            Opts::new("model_info", "the run being served (value 1)"),
            &["identity", "category", "backbone", "precision"],
        );
        // The names and label sets above are fixed and valid; creating them cannot fail.
        let metrics = Metrics {
            registry,
            requests: requests.expect("valid metric"),
            latency: latency.expect("valid metric"),
            batch_size: batch_size.expect("valid metric"),
            queue_depth: queue_depth.expect("valid metric"),
            verdicts: verdicts.expect("valid metric"),
            reloads: reloads.expect("valid metric"),
            model: model.expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.requests.clone()),
            Box::new(metrics.latency.clone()),
            Box::new(metrics.batch_size.clone()),
            Box::new(metrics.queue_depth.clone()),
            Box::new(metrics.verdicts.clone()),
            Box::new(metrics.reloads.clone()),
            Box::new(metrics.model.clone()),
        ];
        for collector in collectors {
            // Distinct names in a fresh registry: registration cannot collide.
            let _ = metrics.registry.register(collector);
        }
        metrics
    }

    /// Counts a verdict.
    pub fn verdict(&self, anomalous: bool) {
        self.verdicts.with_label_values(&[if anomalous { "anomalous" } else { "good" }]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.requests.with_label_values(&["/v1/score", "200"]).inc();
        metrics.latency.with_label_values(&["/v1/score"]).observe(0.004);
        metrics.batch_size.observe(3.0);
        metrics.queue_depth.set(2);
        metrics.verdict(true);
        metrics.reloads.with_label_values(&["ok"]).inc();
        let text = metrics.render();
        for name in [
            "anodet_http_requests_total{route=\"/v1/score\",status=\"200\"} 1",
            "anodet_http_request_duration_seconds_bucket",
            "anodet_batch_size_sum 3",
            "anodet_queue_depth 2",
            "anodet_verdicts_total{verdict=\"anomalous\"} 1",
            "anodet_reloads_total{outcome=\"ok\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
    }
}
