import Foundation
import OCITestSupport
import Testing

/// Reads answered as the registry answers them: the client gets the registry's head as it came
/// (less what is the connection's), in its order, and the requests around them are answered in
/// order on one connection.
@Suite("oci-connector-proxy reads, as the registry answers them", .serialized)
struct ReadParityTests {
    static let accept = ["Accept": TestImage.manifestMediaType]

    @Test(arguments: ProxyEndToEndTests.Upstream.allCases)
    func headsCarryTheRegistrysAnswer(_ kind: ProxyEndToEndTests.Upstream) async throws {
        let (proxy, registry, issuer) = try await ProxyEndToEndTests.proxy(for: kind)
        defer { proxy.stop() }
        let repository = "raw-\(kind)/app"
        let image = try ProxyEndToEndTests.seed(registry, kind, issuer, repository: repository)
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(repository)"
        // The first read of a scope waits for the upstream's token; the ones after it have it at hand.
        for _ in 0..<3 {
            for reference in ["v1", image.manifestDigest] {
                let head = try Curl.request("HEAD", "\(base)/manifests/\(reference)", headers: Self.accept, token: token)
                #expect(head.status == 200)
                #expect(head.header("Content-Length") == "\(image.manifest.count)")
                #expect(head.header("Content-Type") == TestImage.manifestMediaType)
                #expect(head.header("Docker-Content-Digest") == image.manifestDigest)
                #expect(head.header("WWW-Authenticate") == nil && head.header("Connection") == nil, "\(head.headers)")
            }
            let blob = try Curl.request("HEAD", "\(base)/blobs/\(sha256Digest(image.layer))", token: token)
            #expect(blob.status == 200 && blob.header("Content-Length") == "\(image.layer.count)")
            let missing = try Curl.request("HEAD", "\(base)/manifests/nope", headers: Self.accept, token: token)
            #expect(missing.status == 404)
        }
        if kind == .anonymous {
            // The registry's header lines in its order, `Content-Length` where it put it.
            let direct = try Curl.request("HEAD", "\(registry.url)/v2/\(repository)/manifests/v1", headers: Self.accept)
            let relayed = try Curl.request("HEAD", "\(base)/manifests/v1", headers: Self.accept, token: token)
            let names = { (response: Curl.Response) in response.headers.map(\.0).filter { $0.lowercased() != "date" } }
            #expect(names(relayed) == names(direct), "\(relayed.headers) against \(direct.headers)")
        }

        // Tokens that do not allow the read are refused before anything goes upstream.
        #expect(try Curl.request("HEAD", "\(base)/manifests/v1", token: proxy.token(repository: "raw-other/app")).status == 403)
        #expect(try Curl.request("HEAD", "\(base)/manifests/v1").status == 401)
        #expect(try Curl.request("HEAD", "\(base)/manifests/v1", token: proxy.token(actions: "push")).status == 403)

        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(log.contains("connector=team-a/up duration_ms="))
        #expect(log.contains("endpoint=manifests/v1 identity=workload method=HEAD reference=v1 repository=\(repository)"))
        let digest = sha256Digest(image.layer)
        #expect(
            log.contains("endpoint=blobs/\(digest) identity=workload method=HEAD reference=\(digest) repository=\(repository)"))
        for secret in ["alice-secret", "s3cret-robot", token] { #expect(!log.contains(secret)) }
    }

    /// Manifest `GET`s: the registry's head and body as they came, from each kind of upstream;
    /// a large manifest, and errors.
    @Test(arguments: ProxyEndToEndTests.Upstream.allCases)
    func manifestGetsCarryTheRegistrysAnswer(_ kind: ProxyEndToEndTests.Upstream) async throws {
        let (proxy, registry, issuer) = try await ProxyEndToEndTests.proxy(for: kind)
        defer { proxy.stop() }
        let repository = "raw-get-\(kind)/app"
        let image = try ProxyEndToEndTests.seed(registry, kind, issuer, repository: repository)
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(repository)"
        for _ in 0..<3 {
            for reference in ["v1", image.manifestDigest] {
                let get = try Curl.request("GET", "\(base)/manifests/\(reference)", headers: Self.accept, token: token)
                #expect(get.status == 200)
                #expect(get.body == image.manifest)
                #expect(get.header("Content-Length") == "\(image.manifest.count)")
                #expect(get.header("Docker-Content-Digest") == image.manifestDigest)
                #expect(get.header("WWW-Authenticate") == nil && get.header("Connection") == nil, "\(get.headers)")
            }
            let missing = try Curl.request("GET", "\(base)/manifests/nope", headers: Self.accept, token: token)
            #expect(missing.status == 404)
            #expect(
                String(decoding: missing.body, as: UTF8.self).contains("MANIFEST_UNKNOWN"),
                "\(String(decoding: missing.body, as: UTF8.self))")
        }
        if kind == .anonymous {
            // The registry's header lines in its order.
            let direct = try Curl.request("GET", "\(registry.url)/v2/\(repository)/manifests/v1", headers: Self.accept)
            let relayed = try Curl.request("GET", "\(base)/manifests/v1", headers: Self.accept, token: token)
            let names = { (response: Curl.Response) in response.headers.map(\.0).filter { $0.lowercased() != "date" } }
            #expect(names(relayed) == names(direct), "\(relayed.headers) against \(direct.headers)")
            #expect(relayed.body == direct.body)

            // A large manifest: streamed, whole.
            let large = try ProxyEndToEndTests.seed(
                registry, kind, issuer, repository: "\(repository)-large", annotationBytes: 100_000)
            let get = try Curl.request("GET", "\(base)-large/manifests/v1", headers: Self.accept, token: token)
            #expect(get.status == 200 && get.body == large.manifest, "\(get.status) \(get.body.count) bytes")
            #expect(get.header("Docker-Content-Digest") == large.manifestDigest)
        }
        #expect(try Curl.request("GET", "\(base)/manifests/v1", token: proxy.token(repository: "raw-other/app")).status == 403)
        #expect(try Curl.request("GET", "\(base)/manifests/v1").status == 401)

        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        #expect(
            log.split(separator: "\n").contains {
                $0.contains("bytes_out=\(image.manifest.count) ") && $0.contains("connector=team-a/up ")
            }, "\(log)")
        #expect(log.contains("endpoint=manifests/v1 identity=workload method=GET reference=v1 repository=\(repository)"))
        for secret in ["alice-secret", "s3cret-robot", token] { #expect(!log.contains(secret)) }
    }

    /// `/v2/` and a connector's `/v2/`, answered by the proxy when the token may ask them: the
    /// same answer, field for field, with or without a `Connection` header; refusals for no
    /// token or another connector's.
    @Test func versionChecksAreAnsweredAsThroughTheParser() async throws {
        let (proxy, _, _) = try await ProxyEndToEndTests.proxy(for: .anonymous)
        defer { proxy.stop() }
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/"
        let connector = "\(base)namespaces/team-a/connectors/up/"
        let parsed = ["Connection": "keep-alive"]
        let withoutDate = { (response: Curl.Response) in
            response.headers.filter { $0.0.lowercased() != "date" }.map { "\($0.0): \($0.1)" }
        }
        for method in ["GET", "HEAD"] {
            for url in [base, connector] {
                let here = try Curl.request(method, url, token: token)
                let throughParser = try Curl.request(method, url, headers: parsed, token: token)
                #expect(here.status == 200 && throughParser.status == 200, "\(method) \(url)")
                #expect(withoutDate(here) == withoutDate(throughParser), "\(here.headers) against \(throughParser.headers)")
                #expect(here.header("Date") != nil && here.body == throughParser.body)
                #expect(here.text == (method == "GET" ? "{}" : ""))
            }
        }
        let other = try Curl.request("GET", connector, token: proxy.token(connector: "team-a/other"))
        #expect(other.status == 403 && other.text.contains(#""code":"DENIED""#), "\(other.status) \(other.text)")
        let anonymous = try Curl.request("HEAD", base)
        #expect(anonymous.status == 401 && anonymous.header("WWW-Authenticate")?.hasPrefix("Basic realm=") == true)

        let log = try String(contentsOf: proxy.logFile, encoding: .utf8)
        let lines = log.split(separator: "\n")
        #expect(
            lines.contains { $0.contains("bytes_in=0 bytes_out=2 client=127.0.0.1:") && $0.contains(" connector=team-a/up ") })
        #expect(log.contains("endpoint=/ identity=workload method=HEAD repository=- request_id="))
        #expect(!log.contains(token))
    }

    /// A `HEAD` in two writes, then, back to back on the same connection: the proxy's own
    /// `/v2/`, a `GET`, a blob `HEAD`, one with a `Connection` header, and two more reads.
    @Test func requestsAroundRelayedHeadsAreAnsweredInOrder() async throws {
        let (proxy, registry, _) = try await ProxyEndToEndTests.proxy(for: .anonymous)
        defer { proxy.stop() }
        let image = try ProxyEndToEndTests.seed(registry, .anonymous, nil, repository: "raw-order/app")
        let token = try proxy.token()
        let manifest = "/v2/namespaces/team-a/connectors/up/raw-order/app/manifests/v1"
        let blob = "/v2/namespaces/team-a/connectors/up/raw-order/app/blobs/\(sha256Digest(image.layer))"
        let accept = "|Accept=\(TestImage.manifestMediaType)"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/raw_heads.py")
        let output = try runCommand(
            "/usr/bin/env",
            [
                "python3", script.path, proxy.host, "HEAD:\(manifest)\(accept)", "GET:/v2/", "GET:\(manifest)\(accept)",
                "HEAD:\(blob)",
                "HEAD:\(manifest)\(accept)|Connection=keep-alive", "HEAD:\(manifest)\(accept)", "GET:\(manifest)\(accept)",
            ], input: token)
        let responses = try JSONDecoder().decode([[Value]].self, from: Data(output.utf8))
        try #require(responses.count == 7, "\(output)")
        let (size, digest) = (image.manifest.count, Value.text(image.manifestDigest))
        for index in [0, 4, 5] {
            #expect(responses[index] == [.number(200), .number(size), .number(0), digest], "\(index): \(output)")
        }
        for index in [2, 6] {
            #expect(responses[index] == [.number(200), .number(size), .number(size), digest], "\(index): \(output)")
        }
        #expect(responses[1] == [.number(200), .number(2), .number(2), .none], "\(output)")
        #expect(Array(responses[3].prefix(3)) == [.number(200), .number(image.layer.count), .number(0)], "\(output)")
    }

    /// A client that sends many manifest `GET`s and reads none of the answers for a while: the
    /// proxy holds about one answer for it (the next request waits for the connection to be
    /// writable), not one per request, and all arrive once it reads.
    @Test func aClientThatDoesNotReadHoldsOneAnswer() async throws {
        let (proxy, registry, _) = try await ProxyEndToEndTests.proxy(for: .anonymous)
        defer { proxy.stop() }
        let image = try ProxyEndToEndTests.seed(registry, .anonymous, nil, repository: "raw-unread/app", annotationBytes: 60_000)
        let token = try proxy.token()
        let path = "/v2/namespaces/team-a/connectors/up/raw-unread/app/manifests/v1"
        // Warm: the upstream connection and the token check are in place before the peak is read.
        #expect(try Curl.request("GET", "http://\(proxy.host)\(path)", headers: Self.accept, token: token).status == 200)
        let before = try #require(proxy.peakResidentKiB)
        let requests = 600  // 36 MB of answers
        let (host, port) = (proxy.host.split(separator: ":")[0], proxy.host.split(separator: ":")[1])
        let output = try runCommand(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import base64, socket, sys, threading, time
                token = sys.stdin.read().strip()
                auth = "Basic " + base64.b64encode(("w:" + token).encode()).decode()
                wire = ("GET \(path) HTTP/1.1\\r\\nHost: \(host):\(port)\\r\\nAuthorization: " + auth +
                        "\\r\\nAccept: \(TestImage.manifestMediaType)\\r\\n\\r\\n").encode()
                connection = socket.create_connection(("\(host)", \(port)), timeout=60)
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                threading.Thread(target=lambda: connection.sendall(wire * \(requests)), daemon=True).start()
                time.sleep(3)
                reader = connection.makefile("rb")
                complete = 0
                for _ in range(\(requests)):
                    status = reader.readline().split()[1]
                    length = 0
                    while (line := reader.readline()) not in (b"\\r\\n", b""):
                        name, _, value = line.decode().partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    complete += status == b"200" and len(reader.read(length)) == length == \(image.manifest.count)
                print(complete)
                """,
            ], input: token)
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == "\(requests)")
        let growth = try #require(proxy.peakResidentKiB) - before
        #expect(growth < 16 * 1024, "the proxy's peak RSS grew by \(growth) KiB")
    }

    /// A TLS handshake sent to the plain-text port (clients that try https first, as skopeo
    /// does) is refused by the HTTP/1 parser at once, not held as the start of a head.
    @Test func aTLSHandshakeOnThePlainPortIsRefused() async throws {
        let (proxy, _, _) = try await ProxyEndToEndTests.proxy(for: .anonymous)
        defer { proxy.stop() }
        let (host, port) = (proxy.host.split(separator: ":")[0], proxy.host.split(separator: ":")[1])
        let output = try runCommand(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import socket
                connection = socket.create_connection(("\(host)", \(port)), timeout=20)
                connection.sendall(bytes.fromhex("16030100f8010000f40303") + bytes(32))
                print(connection.recv(200).split(b"\\r\\n")[0].decode())
                """,
            ])
        #expect(output.hasPrefix("HTTP/1.1 400"), "\(output)")
    }

    /// A JSON number, string or null, as `raw_heads.py` prints them.
    enum Value: Decodable, Equatable {
        case number(Int), text(String), none

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .none
            } else if let number = try? container.decode(Int.self) {
                self = .number(number)
            } else {
                self = .text(try container.decode(String.self))
            }
        }
    }

    /// A manifest reference that is neither a tag nor a digest is no route of the registry's: the
    /// proxy answers it with the registry's status for every method, in the registry's error
    /// format (the registry's own router answers plain text).
    @Test func anInvalidManifestReferenceIsAnsweredAsTheRegistryAnswersIt() async throws {
        let (proxy, registry, _) = try await ProxyEndToEndTests.proxy(for: .anonymous)
        defer { proxy.stop() }
        let token = try proxy.token(actions: "pull,push,delete")
        for method in ["GET", "HEAD", "DELETE", "PUT"] {
            for reference in [".INVALID_MANIFEST_NAME", "-leading-dash", String(repeating: "a", count: 129)] {
                let direct = try Curl.request(
                    method, "\(registry.url)/v2/parity/app/manifests/\(reference)", headers: Self.accept)
                let proxied = try Curl.request(
                    method, "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/parity/app/manifests/\(reference)",
                    headers: Self.accept, token: token)
                #expect(
                    proxied.status == direct.status, "\(method) \(reference): \(proxied.status), the registry \(direct.status)")
                if method != "HEAD" {
                    #expect(
                        proxied.text.hasPrefix(#"{"errors":[{"code":"MANIFEST_UNKNOWN""#),
                        "\(method) \(reference): \(proxied.text)")
                }
            }
        }
    }
}
