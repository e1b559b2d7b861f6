import Foundation
import JWTKit

/// The claims of a Kubernetes service account token, as kube-apiserver writes them:
///
/// ```json
/// {"aud": ["oci-connector-proxy"], "exp": 1700003600, "iat": 1700000000, "nbf": 1700000000,
///  "iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:team-a:builder",
///  "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder", "uid": "…"},
///                    "pod": {"name": "build-x7k2", "uid": "…"}}}
/// ```
///
/// Times are checked by ``ServiceAccountTokenVerifier`` with its clock and leeway, not here.
struct ServiceAccountTokenClaims: JWTPayload {
    struct Kubernetes: Codable {
        struct Object: Codable {
            let name: String
            let uid: String?
        }
        let namespace: String
        let serviceaccount: Object
        let pod: Object?
    }

    let iss: String
    let sub: String?
    let aud: AudienceClaim
    let exp: Int?
    let nbf: Int?
    let iat: Int?
    let kubernetes: Kubernetes?

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, exp, nbf, iat
        case kubernetes = "kubernetes.io"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Only what is needed before the signature can be checked: the issuer, whose keys check it.
struct UnverifiedIssuer: Decodable {
    let iss: String?
}

/// The JOSE header fields the verifier looks at.
struct TokenHeader: Decodable {
    let alg: String?
    let kid: String?
}
