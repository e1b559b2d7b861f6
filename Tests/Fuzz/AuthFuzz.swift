// libFuzzer target for the `WWW-Authenticate` and scope parsers of OCIAuth, which read what
// upstream registries and clients send. Built with their sources by scripts/fuzz.sh.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuth(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let challenges = try? AuthChallenge.parse(text) {
        for challenge in challenges where challenge.scheme.isEmpty { fatalError("\(text): a challenge without a scheme") }
    }
    if let scope = Scope(parsing: text) {
        // What a scope prints, it reads back as itself.
        guard Scope(parsing: scope.description) == scope else { fatalError("\(text) does not round-trip") }
    }
    let set = ScopeSet(parsing: text)
    guard ScopeSet(parsing: set.description) == set else { fatalError("\(text): a scope set does not round-trip") }
    return 0
}
