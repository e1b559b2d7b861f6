import NIOSSL
import Synchronization

/// A TLS context built on first use and then shared: building one parses the system's
/// certificate authorities (about 1 MiB and a few milliseconds), and a proxy that reaches only
/// plain-HTTP registries may run where there are none to parse.
final class SharedTLSContext: Sendable {
    private let configuration: TLSConfiguration
    private let built = Mutex<NIOSSLContext?>(nil)

    init(_ configuration: TLSConfiguration) {
        self.configuration = configuration
    }

    /// The context, built now if it was not yet.
    func context() throws -> NIOSSLContext {
        try built.withLock { built in
            if let built { return built }
            let context = try NIOSSLContext(configuration: configuration)
            built = context
            return context
        }
    }
}
