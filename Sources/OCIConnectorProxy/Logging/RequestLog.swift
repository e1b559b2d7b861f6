import Logging
import OCIBlobForwarder
import Synchronization

/// One log line per request, written when the response body is done.
final class RequestLog: Sendable {
    let logger: Logger
    let method: String
    let started = ContinuousClock.now
    let bytesIn = ByteCounter()
    let bytesOut = ByteCounter()
    private let fields = Mutex(Fields())

    struct Fields {
        var connector: String?
        var repository: String?
        var endpoint: String?
        var finished = false
    }

    init(logger: Logger, method: String) {
        self.logger = logger
        self.method = method
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
        // Below the log level nothing is built: this runs for every request.
        guard let snapshot, logger.logLevel <= .info else { return }
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
