import CoreMetrics
import Synchronization

/// What the proxy counts about the requests it answers, through swift-metrics: the backend is
/// the embedder's (the `oci-connector-proxy` executable exports them in the Prometheus format on
/// its admin listener). Without a backend bootstrapped, nothing is recorded.
///
/// Every label value comes from a bounded set, so a client cannot grow the number of series:
/// connectors are the configured ones (any other name a path holds is `-`), methods those the
/// distribution API uses (any other is `other`), endpoints their kinds and statuses their class.
/// No repository, tag, identity or token is ever a label.
///
/// - `oci_connector_requests_total{connector, method, endpoint, status}`
/// - `oci_connector_request_bytes_total{connector, direction}`: request bodies in, answers out.
/// - `oci_connector_requests_in_flight`
final class ProxyMetrics: Sendable {
    private let connectors: Set<String>
    private let requests = Mutex<[RequestKey: Counter]>([:])
    private let bytes = Mutex<[String: (received: Counter, sent: Counter)]>([:])
    /// Requests decided and not yet finished.
    let inFlight = Meter(label: "oci_connector_requests_in_flight")

    private struct RequestKey: Hashable {
        let connector: String
        let method: String
        let endpoint: String
        let status: String
    }

    /// Metrics for a proxy serving `connectors` (their `namespace/name`).
    init(connectors: Set<String>) {
        self.connectors = connectors
    }

    /// The label of a request's connector: its name if it is configured, `-` otherwise.
    func connectorLabel(_ name: String?) -> String {
        guard let name, connectors.contains(name) else { return "-" }
        return name
    }

    /// The methods the distribution API uses; any other is counted as `other`.
    static let methods: Set<String> = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]

    static func statusClass(_ status: Int) -> String {
        switch status {
        case 100..<200: "1xx"
        case 200..<300: "2xx"
        case 300..<400: "3xx"
        case 400..<500: "4xx"
        case 500..<600: "5xx"
        default: "other"
        }
    }

    /// A request's answer is complete (or abandoned).
    func requestFinished(connector: String?, method: String, endpoint: String, status: Int, bytesIn: Int, bytesOut: Int) {
        let key = RequestKey(
            connector: connectorLabel(connector), method: Self.methods.contains(method) ? method : "other",
            endpoint: endpoint, status: Self.statusClass(status))
        let counter = requests.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "oci_connector_requests_total",
                dimensions: [
                    ("connector", key.connector), ("method", key.method), ("endpoint", key.endpoint), ("status", key.status),
                ])
            counters[key] = counter
            return counter
        }
        counter.increment()
        inFlight.decrement()
        guard bytesIn > 0 || bytesOut > 0 else { return }
        let pair = bytes.withLock { pairs in
            if let pair = pairs[key.connector] { return pair }
            let label = "oci_connector_request_bytes_total"
            let pair = (
                received: Counter(label: label, dimensions: [("connector", key.connector), ("direction", "in")]),
                sent: Counter(label: label, dimensions: [("connector", key.connector), ("direction", "out")])
            )
            pairs[key.connector] = pair
            return pair
        }
        if bytesIn > 0 { pair.received.increment(by: bytesIn) }
        if bytesOut > 0 { pair.sent.increment(by: bytesOut) }
    }
}

extension Duration {
    /// The duration in whole nanoseconds, as metrics timers take it.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
