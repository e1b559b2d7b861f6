import CoreMetrics
import Synchronization

/// How many requests may be under way at once for one identity and through one connector; one
/// more is answered `429 TOOMANYREQUESTS` with `Retry-After`, before anything goes upstream.
///
/// One workload (a proxy token's subject, or a service account) cannot take all of the proxy,
/// nor all of a registry's capacity a connector stands for: the rest of the cluster keeps being
/// served. A pull makes a few requests at once (docker and containerd three layers, buildkit
/// and crane up to 16 by default), so the defaults leave room for many pulls of one workload.
public struct RequestLimits: Sendable, Hashable {
    /// The most requests one identity may have under way; `0` for no limit.
    public var perIdentity: Int
    /// The most requests under way through one connector; `0` for no limit.
    public var perConnector: Int

    /// Creates limits: by default 256 requests per identity and 1024 per connector.
    public init(perIdentity: Int = 256, perConnector: Int = 1024) {
        self.perIdentity = perIdentity
        self.perConnector = perConnector
    }
}

/// Counts the requests under way per identity and per connector against ``RequestLimits``.
///
/// A request holds a ``Lease`` from its decision until its log line is written (its answer is
/// complete or abandoned); a lease that is dropped without that gives its place back too.
final class RequestConcurrency: Sendable {
    /// Which limit a request met.
    enum Limit: String, Sendable {
        case identity
        case connector
    }

    let limits: RequestLimits
    private let counts = Mutex<(identities: [String: Int], connectors: [String: Int])>(([:], [:]))
    /// `oci_connector_requests_limited_total{limit}`: requests refused by a limit.
    private let refusals: [Limit: Counter] = [
        .identity: Counter(label: "oci_connector_requests_limited_total", dimensions: [("limit", "identity")]),
        .connector: Counter(label: "oci_connector_requests_limited_total", dimensions: [("limit", "connector")]),
    ]

    init(limits: RequestLimits) {
        self.limits = limits
    }

    /// A place for one more request of `identity` through `connector`, or the limit it met.
    func admit(identity: String, connector: String) -> Result<Lease, LimitReached> {
        let refused = counts.withLock { counts -> Limit? in
            let ofIdentity = counts.identities[identity, default: 0]
            let ofConnector = counts.connectors[connector, default: 0]
            if limits.perIdentity > 0, ofIdentity >= limits.perIdentity { return .identity }
            if limits.perConnector > 0, ofConnector >= limits.perConnector { return .connector }
            counts.identities[identity] = ofIdentity + 1
            counts.connectors[connector] = ofConnector + 1
            return nil
        }
        if let refused {
            refusals[refused]?.increment()
            return .failure(
                LimitReached(limit: refused, maximum: refused == .identity ? limits.perIdentity : limits.perConnector))
        }
        return .success(Lease(identity: identity, connector: connector, owner: self))
    }

    /// The requests under way for `identity` and through `connector` now.
    func underWay(identity: String, connector: String) -> (identity: Int, connector: Int) {
        counts.withLock { ($0.identities[identity, default: 0], $0.connectors[connector, default: 0]) }
    }

    fileprivate func release(identity: String, connector: String) {
        counts.withLock { counts in
            // Entries at zero are removed: identities come and go, the table must not grow with them.
            let ofIdentity = counts.identities[identity, default: 1] - 1
            counts.identities[identity] = ofIdentity > 0 ? ofIdentity : nil
            let ofConnector = counts.connectors[connector, default: 1] - 1
            counts.connectors[connector] = ofConnector > 0 ? ofConnector : nil
        }
    }

    /// One request's place; given back once, by ``release()`` or when the lease goes.
    final class Lease: Sendable {
        private let identity: String
        private let connector: String
        private let owner: RequestConcurrency
        private let held = Atomic(true)

        fileprivate init(identity: String, connector: String, owner: RequestConcurrency) {
            self.identity = identity
            self.connector = connector
            self.owner = owner
        }

        func release() {
            guard held.exchange(false, ordering: .acquiringAndReleasing) else { return }
            owner.release(identity: identity, connector: connector)
        }

        deinit { release() }
    }

    /// A request refused by a limit.
    struct LimitReached: Error {
        let limit: Limit
        let maximum: Int

        /// The refusal, as registries answer rate limits: `429 TOOMANYREQUESTS`, with `Retry-After`.
        func refusal(identity: String, connector: String) -> RegistryErrorResponse {
            let what =
                switch limit {
                case .identity: "\(identity) has"
                case .connector: "connector \(connector) has"
                }
            var refusal = RegistryErrorResponse(
                .tooManyRequests, "TOOMANYREQUESTS",
                "\(what) \(maximum) requests under way, the most the proxy allows; retry when one has finished")
            refusal.headers.add(name: "Retry-After", value: "1")
            return refusal
        }
    }
}
