// libFuzzer target for what the proxy reads of a client's token before and after its signature
// check: the compact JWS (header, base64url parts) and the claims of a payload. Built with those
// sources of OCIProxyToken by scripts/fuzz.sh; the signature check itself is swift-crypto's.
import Foundation
import OCIReference

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzToken(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    let text = String(decoding: bytes, as: UTF8.self)
    if let jws = try? CompactJWS(text) {
        // The signing input is the token's first two parts, as they came.
        guard text.utf8.starts(with: jws.signingInput) else { fatalError("\(text): a signing input it does not start with") }
        check(payload: jws.payload)
    }
    // Payloads as a signer might have written them: the input itself.
    check(payload: bytes)
    return 0
}

/// Claims that decode are decided on without trapping, and encode to claims that decode the same.
private func check(payload: Data) {
    guard let claims = try? ProxyTokenClaims(payload: payload) else { return }
    _ = try? claims.checkValidity(at: Date(timeIntervalSince1970: 1_800_000_000))
    for action in ["pull", "push", "delete", ""] {
        _ = claims.allows(connector: claims.connectors.first ?? "team/hub", action: action, repository: "team/app")
        _ = claims.allows(connector: "team/hub", action: action, repository: nil)
    }
    guard let encoded = try? JSONEncoder().encode(claims), let again = try? ProxyTokenClaims(payload: encoded), again == claims
    else { fatalError("claims do not round-trip: \(String(decoding: payload, as: UTF8.self))") }
}
