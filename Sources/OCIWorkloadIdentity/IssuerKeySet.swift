import Foundation
import JWTKit

/// The current public keys of one issuer, read from its ``ServiceAccountIssuer/KeySource``,
/// kept for ``ServiceAccountTokenVerifier/Configuration/keyRefreshInterval`` and read again
/// sooner when a token names a key it does not hold (at most once per
/// ``ServiceAccountTokenVerifier/Configuration/minimumRefreshInterval``: a flood of tokens with
/// made-up key IDs cannot make the proxy hammer the issuer). Concurrent reads are shared.
actor IssuerKeySet {
    /// A usable key: its type (checked against the token's `alg`) and a collection that holds it.
    struct Key {
        let jwk: JWK
        let algorithm: String
        let collection: JWTKeyCollection
    }

    let issuer: ServiceAccountIssuer
    private let fetch: ServiceAccountTokenVerifier.Fetcher
    private let configuration: ServiceAccountTokenVerifier.Configuration
    private var keys: [String: Key] = [:]
    private var fetchedAt: Date?
    private var lastAttempt: Date?
    private var refreshing: Task<Void, Never>?
    private var lastError: String?

    init(
        issuer: ServiceAccountIssuer, fetch: @escaping ServiceAccountTokenVerifier.Fetcher,
        configuration: ServiceAccountTokenVerifier.Configuration
    ) {
        self.issuer = issuer
        self.fetch = fetch
        self.configuration = configuration
    }

    /// The key `kid`, reading the key set again first if it is stale or lacks it.
    func key(_ kid: String, now: Date) async throws(ServiceAccountTokenError) -> Key {
        let stale = fetchedAt.map { now.timeIntervalSince($0) >= configuration.keyRefreshInterval } ?? true
        let mayRetry = lastAttempt.map { now.timeIntervalSince($0) >= configuration.minimumRefreshInterval } ?? true
        if (stale || keys[kid] == nil) && mayRetry {
            await refresh(now: now)
        }
        if let key = keys[kid] { return key }
        if fetchedAt == nil, let lastError {
            throw ServiceAccountTokenError("the keys of issuer \(issuer.url) could not be read: \(lastError)")
        }
        throw ServiceAccountTokenError("the token's key \(kid) is not one of issuer \(issuer.url)'s")
    }

    private func refresh(now: Date) async {
        if let refreshing { return await refreshing.value }
        lastAttempt = now
        let task = Task { await self.read(now: now) }
        refreshing = task
        await task.value
        refreshing = nil
    }

    private func read(now: Date) async {
        do {
            let data = try await jwksDocument()
            let set: JWKS
            do {
                set = try JSONDecoder().decode(JWKS.self, from: data)
            } catch {
                throw ServiceAccountTokenError("the key set is not a JWKS document")
            }
            var read: [String: Key] = [:]
            for jwk in set.keys {
                // Only signature keys of the two kinds kube-apiserver signs with; others are skipped.
                guard let kid = jwk.keyIdentifier?.string, let algorithm = Self.algorithm(of: jwk) else { continue }
                let collection = JWTKeyCollection()
                do {
                    try await collection.add(jwk: jwk)
                } catch {
                    continue
                }
                read[kid] = Key(jwk: jwk, algorithm: algorithm, collection: collection)
            }
            keys = read
            fetchedAt = now
            lastError = nil
        } catch let error as ServiceAccountTokenError {
            lastError = error.reason
        } catch {
            lastError = "\(error)"
        }
    }

    /// The `alg` a key verifies: `RS256` for RSA keys, `ES256` for P-256 keys; `nil` for others,
    /// and for keys whose own `alg` says something else.
    static func algorithm(of jwk: JWK) -> String? {
        let algorithm: String
        switch jwk.keyType {
        case .rsa: algorithm = "RS256"
        case .ecdsa where jwk.curve?.rawValue == "P-256": algorithm = "ES256"
        default: return nil
        }
        if let declared = jwk.algorithm, declared.rawValue != algorithm { return nil }
        return algorithm
    }

    /// The JWKS document's bytes, from a file, a URL, or the URL OIDC discovery names.
    private func jwksDocument() async throws -> Data {
        switch issuer.keys {
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ServiceAccountTokenError("cannot read \(path)")
            }
            return data
        case .url(let url):
            return try await fetch(url)
        case .discovery:
            let document = try await fetch(issuer.discoveryURL)
            struct Discovery: Decodable {
                let jwks_uri: String
            }
            guard let discovery = try? JSONDecoder().decode(Discovery.self, from: document) else {
                throw ServiceAccountTokenError("\(issuer.discoveryURL) has no jwks_uri")
            }
            return try await fetch(discovery.jwks_uri)
        }
    }
}
