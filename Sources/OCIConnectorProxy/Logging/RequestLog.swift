import Logging
import OCIBlobForwarder
import Synchronization

/// One log line per request, written when the response body is done.
///
/// Finishing it also counts the request in ``ProxyMetrics``.
final class RequestLog: Sendable {
    let logger: Logger
    let method: String
    let metrics: ProxyMetrics?
    let started = ContinuousClock.now
    let bytesIn = ByteCounter()
    let bytesOut = ByteCounter()
    private let fields = Mutex(Fields())

    struct Fields {
        var connector: String?
        var repository: String?
        var endpoint: String?
        /// The endpoint's kind, for metrics: `manifests`, `blobs`, `uploads`, `tags`,
        /// `referrers`, `catalog`, `base`; `-` when the path named none.
        var endpointKind = "-"
        var finished = false
    }

    init(logger: Logger, method: String, metrics: ProxyMetrics? = nil) {
        self.logger = logger
        self.method = method
        self.metrics = metrics
        metrics?.inFlight.increment()
    }

    var endpointKind: String {
        get { fields.withLock { $0.endpointKind } }
        set { fields.withLock { $0.endpointKind = newValue } }
    }

    var connector: String? {
        get { fields.withLock { $0.connector } }
        set { fields.withLock { $0.connector = newValue } }
    }

    var repository: String? {
        get { fields.withLock { $0.repository } }
        set { fields.withLock { $0.repository = newValue } }
    }

    var endpoint: String? {
        get { fields.withLock { $0.endpoint } }
        set { fields.withLock { $0.endpoint = newValue } }
    }

    func finish(status: Int, detail: String? = nil) {
        let snapshot = fields.withLock { fields -> Fields? in
            guard !fields.finished else { return nil }
            fields.finished = true
            return fields
        }
        guard let snapshot else { return }
        metrics?.requestFinished(
            connector: snapshot.connector, method: method, endpoint: snapshot.endpointKind, status: status,
            bytesIn: bytesIn.value, bytesOut: bytesOut.value)
        // Below the log level nothing is built: this runs for every request.
        guard logger.logLevel <= .info else { return }
        let elapsed = ContinuousClock.now - started
        var metadata: Logger.Metadata = [
            "request_id": "\(RequestID.next())", "method": "\(method)", "status": "\(status)",
            "connector": "\(snapshot.connector ?? "-")", "repository": "\(snapshot.repository ?? "-")",
            "endpoint": "\(snapshot.endpoint ?? "-")", "bytes_in": "\(bytesIn.value)", "bytes_out": "\(bytesOut.value)",
            "duration_ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)",
        ]
        if let detail { metadata["detail"] = "\(detail)" }
        logger.info("request", metadata: metadata)
    }
}
