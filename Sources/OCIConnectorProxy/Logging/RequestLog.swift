import Logging
import OCIBlobForwarder
import Synchronization

/// One log line per request, written when the response body is done.
///
/// Its fields are metadata of the `request` event, numbers as numbers: `request_id`, `client`
/// (the peer's address), `identity` (the proxy token's subject or the service account,
/// `system:serviceaccount:NS:NAME`, never the token), `pod` (a bound service account token's),
/// `method`,
/// `action` (`pull`, `push`, `delete`, `catalog`), `connector`, `repository`, `endpoint`,
/// `reference` (tag or digest), `status`, `bytes_in`, `bytes_out`, `upstream_ms` (waiting for
/// the upstream's answers' heads), `duration_ms`, and `detail` when there is one.
///
/// Finishing it also counts the request in ``ProxyMetrics``.
final class RequestLog: Sendable {
    let logger: Logger
    let method: String
    let client: String?
    let metrics: ProxyMetrics?
    let started = ContinuousClock.now
    let bytesIn = ByteCounter()
    let bytesOut = ByteCounter()
    private let fields = Mutex(Fields())

    struct Fields {
        var connector: String?
        var identity: String?
        /// The pod a service account token is bound to.
        var pod: String?
        var action: String?
        var repository: String?
        var endpoint: String?
        var reference: String?
        /// The endpoint's kind, for metrics: `manifests`, `blobs`, `uploads`, `tags`,
        /// `referrers`, `catalog`, `base`; `-` when the path named none.
        var endpointKind = "-"
        var upstreamNanoseconds: Int64 = 0
        var finished = false
        /// The request's place under the proxy's request limits, given back when it finishes.
        var lease: RequestConcurrency.Lease?
    }

    init(logger: Logger, method: String, client: String? = nil, metrics: ProxyMetrics? = nil) {
        self.logger = logger
        self.method = method
        self.client = client
        self.metrics = metrics
        metrics?.inFlight.increment()
    }

    /// Sets fields, under one lock.
    func update(_ body: (inout Fields) -> Void) {
        fields.withLock { body(&$0) }
    }

    /// Holds the request's place under the request limits until the request finishes.
    func hold(_ lease: RequestConcurrency.Lease) {
        fields.withLock { $0.lease = lease }
    }

    /// The upstream answered a request's head after `nanoseconds`.
    func upstreamAnswered(after nanoseconds: Int64) {
        fields.withLock { $0.upstreamNanoseconds += nanoseconds }
    }

    func finish(status: Int, detail: String? = nil) {
        let snapshot = fields.withLock { fields -> Fields? in
            guard !fields.finished else { return nil }
            fields.finished = true
            return fields
        }
        guard let snapshot else { return }
        snapshot.lease?.release()
        metrics?.requestFinished(
            connector: snapshot.connector, method: method, endpoint: snapshot.endpointKind, status: status,
            bytesIn: bytesIn.value, bytesOut: bytesOut.value)
        // Below the log level nothing is built: this runs for every request.
        guard logger.logLevel <= .info else { return }
        let elapsed = ContinuousClock.now - started
        var metadata: Logger.Metadata = [
            "request_id": "\(RequestID.next())", "method": "\(method)", "status": .stringConvertible(status),
            "connector": "\(snapshot.connector ?? "-")", "repository": "\(snapshot.repository ?? "-")",
            "endpoint": "\(snapshot.endpoint ?? "-")", "bytes_in": .stringConvertible(bytesIn.value),
            "bytes_out": .stringConvertible(bytesOut.value), "duration_ms": .stringConvertible(elapsed.nanoseconds / 1_000_000),
            "upstream_ms": .stringConvertible(snapshot.upstreamNanoseconds / 1_000_000),
        ]
        if let client { metadata["client"] = "\(client)" }
        if let identity = snapshot.identity { metadata["identity"] = "\(identity)" }
        if let pod = snapshot.pod { metadata["pod"] = "\(pod)" }
        if let action = snapshot.action { metadata["action"] = "\(action)" }
        if let reference = snapshot.reference { metadata["reference"] = "\(reference)" }
        if let detail { metadata["detail"] = "\(detail)" }
        logger.info("request", metadata: metadata)
    }
}
