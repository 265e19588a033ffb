import Metrics
import Prometheus

/// The process's swift-metrics backend: a Prometheus registry, bootstrapped once (swift-metrics allows
/// one bootstrap per process), by the composition root only. Every server in the process (tests start
/// many) shares it; `/metrics` emits it after the per-backend series.
enum MetricsBootstrap {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}
