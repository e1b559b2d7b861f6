import Foundation
import OCITestSupport
import Testing

/// Redirects, failures mid-body, and big blobs through the proxy.
@Suite("oci-connector-proxy streaming", .serialized)
struct ProxyStreamingTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    static func stubProxy(_ stub: StubUpstream, parameters: [String: String] = [:]) async throws -> ProxyProcess {
        try await ProxyProcess.start(
            binDirectory: Tool.binDirectory,
            connectorsYAML: ConnectorYAML.connector(
                name: "up", address: stub.url, username: "stub-user", password: "stub-secret",
                extraParams: parameters))
    }

    @Test func redirectsAreFollowedWithoutCredentialsOnAnotherOrigin() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/redirect/app/blobs/\(Self.digest)"
        // Each GET is answered on the event loop, which follows the redirect to the other origin
        // itself; with a `Connection` header, the responder follows it.
        for headers in [[:], [:], ["Connection": "keep-alive"]] {
            let response = try Curl.request("GET", url, headers: headers, token: proxy.token())
            #expect(response.status == 200)
            #expect(response.body == stub.blob)
        }
        #expect(stub.storageAuthorizations == [nil, nil, nil], "credentials crossed to another origin")
        #expect(stub.redirectsAnswered == 3, "a redirect was asked for twice")
    }

    @Test func headRedirectsAreFollowedToo() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/redirect/app/blobs/\(Self.digest)"
        // Each HEAD is answered on the event loop, which follows the redirect itself.
        for _ in 0..<2 {
            let response = try Curl.request("HEAD", url, token: proxy.token())
            #expect(response.status == 200)
            #expect(response.header("Content-Length") == "\(stub.blob.count)")
        }
        #expect(stub.storageAuthorizations == [nil, nil], "credentials crossed to another origin")
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let prefix = "/v2/namespaces/team-a/connectors/up"
        let (plain, slow) = ("\(prefix)/plain/app/blobs/\(Self.digest)", "\(prefix)/slow/app/blobs/\(Self.digest)")
        let (manifest, slowManifest) = ("\(prefix)/plain/app/manifests/v1", "\(prefix)/slow/app/manifests/v1")
        _ = try Curl.request("HEAD", "http://\(proxy.host)\(plain)", token: proxy.token())
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/pipelined.py")
        // Reads answered on the event loop (some slow upstream; manifest GETs with bodies of several
        // reads), mixed with the proxy's own `/v2/`, answered at once on the event loop too, and a
        // refused connector, which the responder answers.
        let output = try runCommand(
            "/usr/bin/env",
            [
                "python3", script.path, proxy.host, "HEAD:\(slow)", "GET:\(prefix)/", "GET:\(slowManifest)", "HEAD:\(slow)",
                "GET:/v2/namespaces/team-a/connectors/nope/plain/app/blobs/\(Self.digest)", "HEAD:\(plain)", "GET:\(plain)",
                "GET:\(manifest)", "HEAD:\(slowManifest)", "GET:\(manifest)",
            ], input: try proxy.token())
        let responses = try JSONDecoder().decode([[Int?]].self, from: Data(output.utf8))
        let size = stub.blob.count
        try #require(responses.count == 10, "\(output)")
        for index in [0, 3, 5, 8] { #expect(responses[index] == [200, size, 0], "response \(index): \(output)") }
        #expect(responses[1] == [200, 2, 2], "\(output)")
        #expect(responses[4][0] == 403 && responses[4][1] == responses[4][2], "\(output)")
        for index in [2, 6, 7, 9] { #expect(responses[index] == [200, size, size], "response \(index): \(output)") }
    }

    @Test func redirectsCanBePassedToTheClient() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub, parameters: ["redirects": "pass"])
        defer { proxy.stop() }
        let response = try Curl.request(
            "GET", "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/redirect/app/blobs/\(Self.digest)",
            token: proxy.token())
        #expect(response.status == 307)
        #expect(response.header("Location") == "http://localhost:\(stub.port)/storage/blob?sig=1")
        #expect(stub.storageAuthorizations.isEmpty)
    }

    /// Concurrent pushes through one connector all reach the registry at once: the proxy does not
    /// queue the ones past a connection limit of its HTTP client's behind the first.
    @Test func concurrentUploadsAreNotQueued() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/hold/app/blobs/uploads"
        let token = try proxy.token()
        let transfers = (0..<StubUpstream.heldUploads).map { index in
            [
                "-u", "w:\(token)", "-X", "PUT", "--data-binary", "x", "-o", "/dev/null", "-w", "%{http_code}\n",
                "\(base)/upload-\(index)?digest=\(Self.digest)",
            ]
        }
        let output = try runCommand(
            "/usr/bin/curl",
            ["-s", "--parallel", "--parallel-immediate", "--parallel-max", "\(transfers.count)"]
                + transfers.joined(separator: ["--next"]))
        #expect(output.split(separator: "\n") == Array(repeating: "201", count: transfers.count), "\(output)")
        #expect(stub.mostUploadsInFlight == StubUpstream.heldUploads, "uploads waited for one another")
    }

    /// An upstream cannot point the proxy at a Unix socket on its machine (a control socket, a
    /// sidecar's API) through a redirect, in either URL form, on either path: the read fails
    /// with the registry's error, and nothing reaches the socket.
    @Test func redirectsToUnixSocketsAreRefused() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        for repository in ["http-unix/app", "unix/app"] {
            for method in ["GET", "HEAD"] {
                for headers in [[:], ["Connection": "keep-alive"]] {
                    let label = "\(method) \(repository) \(headers)"
                    let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(repository)/blobs/\(Self.digest)"
                    let response = try Curl.request(method, url, headers: headers, token: proxy.token())
                    #expect(response.status == 502, "\(label)")
                    if method == "GET" {
                        #expect(response.text.contains(#""code":"UNAVAILABLE""#), "\(label): \(response.text)")
                    }
                }
            }
        }
        #expect(stub.unixSocketRequests == 0, "a redirect reached the Unix socket")
    }

    /// Plain keep-alive reads of blobs and manifests are answered on the event loop (a fresh
    /// proxy's first one after finding out how the upstream authenticates); a read with a
    /// `Connection` header goes through the responder. Both must behave the same, and so must a
    /// blob read the upstream redirects to storage on another origin (`viaStorage`), where what
    /// is tested happens on the storage leg.
    static let reads: [(path: String, viaStorage: Bool, onEventLoop: Bool)] = [
        ("blobs/\(digest)", false, false), ("blobs/\(digest)", false, true), ("manifests/v1", false, true),
        ("blobs/\(digest)", true, false), ("blobs/\(digest)", true, true),
    ]

    /// The stub's repository whose reads behave as `kind` says (`slow`, `broken`, `endless`),
    /// directly or after a redirect to storage.
    static func repository(_ kind: String, viaStorage: Bool) -> String {
        viaStorage ? "storage-\(kind)/app" : "\(kind)/app"
    }

    /// curl's arguments that send a read to the responder when it is not to be answered on the
    /// event loop.
    static func pathArguments(onEventLoop: Bool) -> [String] {
        onEventLoop ? [] : ["-H", "Connection: keep-alive"]
    }

    @Test(arguments: reads) func anUpstreamFailureMidBodyIsNotACleanResponse(path: String, viaStorage: Bool, onEventLoop: Bool)
        async throws
    {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let directory = try Loopback.temporaryDirectory("broken")
        defer { try? FileManager.default.removeItem(at: directory) }
        // curl fails (exit 18, partial transfer) instead of reporting a complete body.
        #expect(throws: (any Error).self) {
            try runCommand(
                "/usr/bin/curl",
                Self.pathArguments(onEventLoop: onEventLoop) + [
                    "-sf", "-u", "w:\(try proxy.token())", "-o", directory.appendingPathComponent("blob").path,
                    "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(Self.repository("broken", viaStorage: viaStorage))/\(path)",
                ])
        }
        let received = (try? Data(contentsOf: directory.appendingPathComponent("blob")))?.count ?? 0
        #expect(received < stub.blob.count)
    }

    @Test(arguments: reads) func aSlowClientHoldsTheUpstreamBackAndLeavingCancelsIt(
        path: String, viaStorage: Bool, onEventLoop: Bool
    ) async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        // A client reading 2 MiB/s for 3 seconds, then hanging up.
        let directory = try Loopback.temporaryDirectory("slow")
        let output = directory.appendingPathComponent("partial")
        _ = try? runCommand(
            "/usr/bin/curl",
            Self.pathArguments(onEventLoop: onEventLoop) + [
                "-s", "--limit-rate", "2M", "--max-time", "3", "-u", "w:\(try proxy.token())", "-o", output.path,
                "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(Self.repository("endless", viaStorage: viaStorage))/\(path)",
            ])
        let received = (try? FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        #expect(received > 0)
        // The proxy read from the upstream only what the client took plus what buffers hold (its
        // log line counts the bytes it passed on), and its memory stayed small.
        let repository = Self.repository("endless", viaStorage: viaStorage)
        let logLine = try #require(
            try await proxy.logLine(containing: "repository=\(repository)"), "no log line for the aborted request")
        let passed =
            logLine.split(separator: " ").first { $0.hasPrefix("bytes_out=") }
            .flatMap { Int($0.dropFirst("bytes_out=".count)) } ?? Int.max
        #expect(passed < received + (32 << 20), "the proxy passed \(passed) bytes, the client took \(received)")
        print(
            "slow client: took \(received) bytes, proxy passed \(passed), proxy peak RSS \((proxy.peakResidentKiB ?? 0) / 1024) MiB"
        )
        #expect((proxy.peakResidentKiB ?? .max) < 128 * 1024)
        #expect(logLine.contains("detail=aborted"), "\(logLine)")
        if viaStorage {
            #expect(!stub.storageAuthorizations.isEmpty, "the read did not reach the storage")
            #expect(stub.storageAuthorizations.allSatisfy { $0 == nil }, "credentials crossed to another origin")
        }
        // Leaving cancels the upstream request: the upstream's writing ends.
        var state = stub.endlessStream
        for _ in 0..<100 where !state.ended {
            try await Task.sleep(for: .milliseconds(100))
            state = stub.endlessStream
        }
        #expect(state.ended, "the upstream request was not cancelled")
    }

    /// A client that leaves while the upstream has not answered yet gets its request logged as
    /// 499, and the proxy goes on serving.
    @Test(arguments: ["HEAD", "GET"]) func aClientLeavingBeforeTheAnswerIsLogged(method: String) async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        let curl = try Self.startCurl([
            "-X", method, "-u", "w:\(try proxy.token())", "-o", "/dev/null", "\(base)/silent/app/manifests/v1",
        ])
        // The upstream answers only after 30 s: the client leaves as soon as it is asked (killed:
        // curl started from the test process does not end on SIGTERM). The proxy logs the request
        // when it sees the client go, not when the upstream answers.
        try #require(try await proxy.waitForConnection(toPort: stub.port), "the read did not reach the upstream")
        kill(curl.process.processIdentifier, SIGKILL)
        curl.process.waitUntilExit()
        let logLine = try #require(
            try await proxy.logLine(containing: "repository=silent/app", attempts: 50),
            "no log line for the abandoned request")
        #expect(logLine.split(separator: " ").contains("status=499"), "\(logLine)")
        #expect(logLine.split(separator: " ").contains("method=\(method)"), "\(logLine)")
        let after = try Curl.request(method, "\(base)/plain/app/manifests/v1", token: proxy.token())
        #expect(after.status == 200)
        #expect(after.body.count == (method == "GET" ? stub.blob.count : 0))
    }

    /// SIGTERM lets reads under way finish (graceful shutdown), whichever path answers them (the
    /// responder or the event loop) and wherever the answer comes from (the upstream, or the
    /// storage it redirects to).
    @Test(arguments: [
        ("GET", "blobs/\(digest)", false, false), ("GET", "blobs/\(digest)", false, true), ("GET", "manifests/v1", false, true),
        ("HEAD", "manifests/v1", false, true), ("GET", "blobs/\(digest)", true, true), ("HEAD", "blobs/\(digest)", true, true),
    ])
    func readsUnderWayFinishOnSIGTERM(method: String, path: String, viaStorage: Bool, onEventLoop: Bool) async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        // The upstream (or the storage it redirects to) answers 300 ms after it is asked; the proxy
        // is told to stop as soon as it holds a connection to the upstream (asking how it
        // authenticates, or asking for the read).
        let url =
            "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/\(Self.repository("slow", viaStorage: viaStorage))/\(path)"
        let curl = try Self.startCurl(
            (method == "HEAD" ? ["-I"] : []) + Self.pathArguments(onEventLoop: onEventLoop) + [
                "-u", "w:\(try proxy.token())", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url,
            ])
        try #require(try await proxy.waitForConnection(toPort: stub.port), "the read did not reach the upstream")
        proxy.terminate()
        let output = curl.output()
        let expectedSize = method == "GET" ? stub.blob.count : 0
        #expect(output == "200 \(expectedSize)", "\(output)")
        for _ in 0..<50 where proxy.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!proxy.isRunning, "the proxy did not stop after its last response")
    }

    /// SIGTERM in the middle of a 1 GiB pull: the pull finishes whole (within the grace period),
    /// then the proxy exits 0.
    @Test func aGibibytePullUnderWayFinishesOnSIGTERM() async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/big/app/blobs/\(Self.digest)"
        let curl = try Self.startCurl([
            "--limit-rate", "256M", "-u", "w:\(try proxy.token())", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url,
        ])
        for _ in 0..<400 where stub.endlessStream.written < 64 << 20 { try await Task.sleep(for: .milliseconds(25)) }
        try #require(stub.endlessStream.written >= 64 << 20, "the pull did not get under way")
        proxy.terminate()
        #expect(curl.output() == "200 \(1 << 30)")
        let status = try await proxy.exitStatus(within: .seconds(30))
        #expect(status == 0, "the proxy did not stop after the pull, or failed (exit status \(String(describing: status)))")
    }

    /// SIGTERM while a read waits on the event loop for an answer it then hands to the responder
    /// (a redirect to the upstream's own origin): the responder's answer is still sent whole
    /// before the connection closes. A `HEAD` answer is written in one batch, flushed after its end.
    @Test(arguments: ["GET", "HEAD"]) func aReadHandedOnUnderWayFinishesOnSIGTERM(method: String) async throws {
        let stub = try await StubUpstream.start()
        defer { stub.stop() }
        let proxy = try await Self.stubProxy(stub)
        defer { proxy.stop() }
        // The upstream redirects 300 ms after it is asked; the proxy is told to stop as soon as it
        // has begun asking.
        let url = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up/slow-redirect/app/blobs/\(Self.digest)"
        let curl = try Self.startCurl(
            (method == "HEAD" ? ["-I"] : []) + [
                "-u", "w:\(try proxy.token())", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url,
            ])
        try #require(try await proxy.waitForConnection(toPort: stub.port), "the read did not reach the upstream")
        proxy.terminate()
        let output = curl.output()
        #expect(output == "200 \(method == "HEAD" ? 0 : stub.blob.count)", "\(output)")
        for _ in 0..<50 where proxy.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!proxy.isRunning, "the proxy did not stop after its last response")
    }

    /// curl, running while the test goes on.
    struct BackgroundCurl {
        let process: Process
        let standardOutput: Pipe

        /// What curl wrote to its standard output, once it has ended.
        func output() -> String {
            let data = standardOutput.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Starts curl with `arguments` (and `-s`) and leaves it running.
    static func startCurl(_ arguments: [String]) throws -> BackgroundCurl {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s"] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        return BackgroundCurl(process: process, standardOutput: output)
    }

    /// A big blob pushed monolithically and in chunks and pulled back with its digest checked,
    /// while the proxy's memory stays bounded. `OCI_CONNECTOR_BIG_BLOB_MIB` sets the size
    /// (1024 by default).
    @Test func aBigBlobStreamsBothWaysInBoundedMemory() async throws {
        let mebibytes = ProcessInfo.processInfo.environment["OCI_CONNECTOR_BIG_BLOB_MIB"].flatMap(Int.init) ?? 1024
        let registry = try await SharedRegistries.shared.anonymous()
        let proxy = try await ProxyProcess.start(
            binDirectory: Tool.binDirectory, connectorsYAML: ConnectorYAML.connector(name: "up", address: registry.url))
        defer { proxy.stop() }
        let directory = try Loopback.temporaryDirectory("big")
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, digest) = try randomBlob(mebibytes: mebibytes, in: directory)
        let token = try proxy.token()
        let base = "http://\(proxy.host)/v2/namespaces/team-a/connectors/up"
        let octets = ["Content-Type": "application/octet-stream"]

        // Monolithic: POST, then PUT with the whole body.
        let started = try Curl.request("POST", "\(base)/big/mono/blobs/uploads/", token: token)
        let location = try #require(started.header("Location"))
        let put = try Curl.request("PUT", location + "&digest=\(digest)", headers: octets, token: token, upload: file)
        #expect(put.status == 201, "\(put.text)")

        // Chunked: PATCH 64 MiB at a time with Content-Range, then an empty PUT.
        var chunkLocation = try #require(
            try Curl.request("POST", "\(base)/big/chunked/blobs/uploads/", token: token).header("Location"))
        let chunk = 64
        for (index, offset) in stride(from: 0, to: mebibytes, by: chunk).enumerated() {
            let part = directory.appendingPathComponent("part\(index)")
            let count = min(chunk, mebibytes - offset)
            try runCommand(
                "/bin/dd", ["if=\(file.path)", "of=\(part.path)", "bs=1M", "skip=\(offset)", "count=\(count)", "status=none"])
            let first = offset << 20
            let patch = try Curl.request(
                "PATCH", chunkLocation,
                headers: octets.merging(["Content-Range": "\(first)-\(first + (count << 20) - 1)"]) { $1 }, token: token,
                upload: part)
            #expect(patch.status == 202, "\(patch.text)")
            chunkLocation = try #require(patch.header("Location"))
            try FileManager.default.removeItem(at: part)
        }
        let finish = try Curl.request("PUT", chunkLocation + "&digest=\(digest)", headers: octets, token: token)
        #expect(finish.status == 201, "\(finish.text)")

        // Pulled back through the proxy, byte for byte.
        for repository in ["big/mono", "big/chunked"] {
            let output = directory.appendingPathComponent("pulled")
            let pulled = try Curl.request("GET", "\(base)/\(repository)/blobs/\(digest)", token: token, output: output)
            #expect(pulled.status == 200)
            #expect(pulled.header("Content-Length") == "\(mebibytes << 20)")
            let sum = try runCommand("/usr/bin/sha256sum", [output.path]).split(separator: " ").first.map(String.init)
            #expect("sha256:" + (sum ?? "") == digest)
            try FileManager.default.removeItem(at: output)
        }

        // Nothing was buffered whole: the proxy's peak memory is far below the blob's size.
        let peak = try #require(proxy.peakResidentKiB)
        #expect(peak < 256 * 1024, "peak RSS \(peak) KiB for \(mebibytes) MiB moved three times")
        print("big blob: \(mebibytes) MiB moved three times, proxy peak RSS \(peak / 1024) MiB")
    }
}
