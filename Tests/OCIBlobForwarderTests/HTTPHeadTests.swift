@testable import OCIBlobForwarder
import Testing

/// Scanning HTTP/1.1 heads in place: what real clients and registries send is scanned exactly;
/// anything a strict reading would not take is left to a full parser.
@Suite("Scanning HTTP/1.1 heads")
struct HTTPHeadTests {
    static func scan(_ text: String) -> HTTPHead.Scan {
        Array(text.utf8).withUnsafeBytes { HTTPHead.scan($0) }
    }

    /// The start line, then each field's name and value, as text.
    static func parts(_ text: String) -> (String, [String])? {
        let bytes = Array(text.utf8)
        guard case .head(let head) = bytes.withUnsafeBytes({ HTTPHead.scan($0) }) else { return nil }
        func string(_ range: Range<Int>) -> String { String(decoding: bytes[range], as: UTF8.self) }
        return (string(head.startLine), head.fields.map { "\(string($0.name))=\(string($0.value))" })
    }

    static let supported: [(String, String, [String])] = [
        // curl 7.88
        ("HEAD /v2/namespaces/ci/connectors/harbor/team/app/manifests/v1 HTTP/1.1\r\nHost: proxy:5000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nAuthorization: Basic Y2k6dG9rZW4=\r\n\r\n",
         "HEAD /v2/namespaces/ci/connectors/harbor/team/app/manifests/v1 HTTP/1.1",
         ["Host=proxy:5000", "User-Agent=curl/7.88.1", "Accept=*/*", "Authorization=Basic Y2k6dG9rZW4="]),
        // containerd (Go net/http): several Accept lines, Bearer token
        ("HEAD /v2/team/app/manifests/v1 HTTP/1.1\r\nHost: proxy\r\nUser-Agent: containerd/1.7.13\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\nAuthorization: Bearer eyJhbGciOiJFZERTQSJ9.e30.sig\r\nAccept-Encoding: gzip\r\n\r\n",
         "HEAD /v2/team/app/manifests/v1 HTTP/1.1",
         ["Host=proxy", "User-Agent=containerd/1.7.13",
          "Accept=application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
          "Accept=application/vnd.docker.distribution.manifest.v2+json", "Authorization=Bearer eyJhbGciOiJFZERTQSJ9.e30.sig",
          "Accept-Encoding=gzip"]),
        // distribution's answer to a manifest HEAD
        ("HTTP/1.1 200 OK\r\nContent-Length: 529\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\r\nDocker-Distribution-Api-Version: registry/2.0\r\nEtag: \"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\"\r\nX-Content-Type-Options: nosniff\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n",
         "HTTP/1.1 200 OK",
         ["Content-Length=529", "Content-Type=application/vnd.oci.image.manifest.v1+json",
          "Docker-Content-Digest=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
          "Docker-Distribution-Api-Version=registry/2.0", "Etag=\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\"",
          "X-Content-Type-Options=nosniff", "Date=Tue, 01 Dec 2026 10:00:00 GMT"]),
        // whitespace around values is not part of them; an empty value is one
        ("HTTP/1.1 404 Not Found\r\nX-A:\tx y \r\nX-Empty:\r\nX-B:   \r\n\r\n", "HTTP/1.1 404 Not Found", ["X-A=x y", "X-Empty=", "X-B="]),
        // no fields at all
        ("HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 204 No Content", []),
    ]

    @Test(arguments: supported)
    func scansWhatClientsAndRegistriesSend(_ text: String, _ startLine: String, _ fields: [String]) throws {
        let (line, found) = try #require(Self.parts(text))
        #expect(line == startLine)
        #expect(found == fields)
    }

    @Test func aHeadEndsAtItsBlankLineWhateverFollows() throws {
        let first = "HEAD /v2/a/manifests/1 HTTP/1.1\r\nHost: p\r\n\r\n"
        let text = first + "GET /v2/ HTTP/1.1\r\nHost: p\r\n\r\n"
        guard case .head(let head) = Self.scan(text) else { Issue.record("not scanned"); return }
        #expect(head.length == first.utf8.count)
        #expect(head.fields.count == 1)
    }

    static let incomplete = [
        "", "HEAD", "HEAD /v2/ HTTP/1.1\r\n", "HEAD /v2/ HTTP/1.1\r\nHost: p\r\n", "HEAD /v2/ HTTP/1.1\r\nHost: p\r\n\r",
    ]

    @Test(arguments: incomplete)
    func waitsForTheRestOfAHead(_ text: String) {
        guard case .incomplete = Self.scan(text) else { Issue.record("expected incomplete"); return }
    }

    static let unsupported = [
        "HEAD /v2/ HTTP/1.1\nHost: p\n\n",  // bare LFs
        "HEAD /v2/ HTTP/1.1\n",  // ... seen before the head is complete
        "HEAD /v2/ HTTP/1.1\rHost",  // a CR alone
        "\u{16}\u{3}\u{1}\u{2}\0\u{1}\0\u{1}\u{FC}\u{3}\u{3}",  // a TLS ClientHello's start: not HTTP at all, refused at once
        "HEAD /v2/ HTTP/1.1\r\nHost: p\nX: y\r\n\r\n",  // a bare LF inside
        "HEAD /v2/ HTTP/1.1\r\nHost: p\r\n folded\r\n\r\n",  // obs-fold
        "HEAD /v2/ HTTP/1.1\r\nHost : p\r\n\r\n",  // space before the colon
        "HEAD /v2/ HTTP/1.1\r\nNo colon\r\n\r\n",
        "HEAD /v2/ HTTP/1.1\r\n: empty name\r\n\r\n",
        "HEAD /v2/ HTTP/1.1\r\nX: caf\u{E9}\r\n\r\n",  // non-ASCII
        "HEAD /v2/ HTTP/1.1\r\nX: a\u{7}b\r\n\r\n",  // a control byte
        "HEAD /v2/ HTTP/1.1\r\nX: a\rb\r\n\r\n",  // a CR inside a value
        "HEAD /v2/\u{1}x HTTP/1.1\r\n\r\n",  // a control byte in the start line
        "\r\nHEAD /v2/ HTTP/1.1\r\n\r\n",  // an empty start line
        "HEAD /v2/ HTTP/1.1\r\nX: " + String(repeating: "a", count: HTTPHead.maximumLength) + "\r\n\r\n",  // too long
        String(repeating: "a", count: HTTPHead.maximumLength + 1),  // too long to be still coming
    ]

    @Test(arguments: unsupported)
    func leavesTheUnusualToAFullParser(_ text: String) {
        guard case .unsupported = Self.scan(text) else { Issue.record("expected unsupported: \(text.debugDescription.prefix(60))"); return }
    }

    static let statuses: [(String, Int?, Bool)] = [
        ("HTTP/1.1 200 OK\r\n\r\n", 200, true),
        ("HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer realm=\"x\"\r\n\r\n", 401, true),
        ("HTTP/1.1 307\r\n\r\n", 307, true),  // the reason phrase may be left out
        ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 200, false),
        ("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n", 200, true),  // nginx says so
        ("HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\n\r\n", 200, false),
        ("HTTP/1.1 200 OK\r\nConnection: foo\r\nConnection: close \r\n\r\n", 200, false),
        ("HTTP/1.1 200 OK\r\nConnection: closed\r\n\r\n", 200, true),
        ("HTTP/1.0 200 OK\r\n\r\n", 200, false),
        ("HTTP/1.1 20 OK\r\n\r\n", nil, true),
        ("HTTP/1.1 2000 OK\r\n\r\n", nil, true),
        ("HTTP/1.1 099 X\r\n\r\n", nil, true),
        ("HTTP/2.0 200 OK\r\n\r\n", nil, false),
        ("GET / HTTP/1.1\r\n\r\n", nil, false),
    ]

    @Test(arguments: statuses)
    func readsAStatusAndWhetherTheConnectionStays(_ text: String, _ status: Int?, _ keepsAlive: Bool) {
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            guard case .head(let head) = HTTPHead.scan(raw) else { Issue.record("not scanned"); return }
            #expect(head.statusCode(in: raw) == status)
            #expect(head.keepsAlive(in: raw) == keepsAlive)
        }
    }

    @Test func namesMatchInAnyCaseAndHopByHopOnesAreKnown() {
        let text = "HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 1\r\ntransfer-Encoding: chunked\r\nTE: x\r\nTEE: x\r\nContent-Type: a\r\nProxy-Authenticate: b\r\nLocation: /x\r\n\r\n"
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            guard case .head(let head) = HTTPHead.scan(raw) else { Issue.record("not scanned"); return }
            #expect(head.fields.map { head.isHopByHop($0, in: raw) } == [true, true, true, false, false, true, false])
            #expect(head.field(named: "content-length", in: raw) == head.fields[0])
            #expect(head.field(named: "location", in: raw) == head.fields[6])
            #expect(head.field(named: "link", in: raw) == nil)
        }
    }

    /// The eight-bytes-at-a-time check agrees with the byte-at-a-time one for every byte value
    /// in every position.
    @Test func wordsOfPlainBytesAreRecognised() {
        var mismatches: [String] = []
        for value in 0...255 {
            for position in 0..<8 {
                var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 8)
                bytes[position] = UInt8(value)
                let word = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                if HTTPHead.allPlain(word) != (value >= 0x20 && value < 0x7F) { mismatches.append("\(value)@\(position)") }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
        #expect(HTTPHead.allPlain(0x2020_2020_2020_2020) && HTTPHead.allPlain(0x7E7E_7E7E_7E7E_7E7E))
    }

    /// Comparing a range of a head with other bytes, eight at a time: a difference in any
    /// position, in a whole word or in the bytes after the last one, and a length apart.
    @Test func rangesCompareWithOtherBytesInEveryPosition() {
        let token = Array("Basic YmVuY2g6ZXlKaGJHY2lPaUpGWkVSVFFTSjkuZTMwLnNpZw==".utf8)  // 54 bytes: six words and six more
        let head = Array("Authorization: ".utf8) + token + Array("\r\n".utf8)
        let range = 15..<15 + token.count
        head.withUnsafeBytes { bytes in
            #expect(token.withUnsafeBytes { HTTPHead.equals(bytes, range, $0) })
            #expect(!token.dropLast().withUnsafeBytes { HTTPHead.equals(bytes, range, $0) })
            #expect(!token.withUnsafeBytes { HTTPHead.equals(bytes, range.dropLast(), $0) })
            #expect([UInt8]().withUnsafeBytes { HTTPHead.equals(bytes, 3..<3, $0) })
            var mismatches: [Int] = []
            for position in token.indices {
                var other = token
                other[position] ^= 0x20
                if other.withUnsafeBytes({ HTTPHead.equals(bytes, range, $0) }) { mismatches.append(position) }
            }
            #expect(mismatches.isEmpty, "taken as equal with a byte changed at \(mismatches)")
        }
    }

    /// Answers whose body a raw `GET` may take whole, by their framing: exactly one
    /// `Content-Length` of digits, and no `Transfer-Encoding`.
    static let framings: [(String, Int?)] = [
        ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n", 1234),
        ("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", 0),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 10\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n", nil),
        ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", nil),
    ]

    @Test(arguments: framings)
    func bodiesAreTakenOnlyWhenTheirLengthFramesThem(_ answer: String, _ length: Int?) throws {
        let bytes = Array(answer.utf8)
        guard case .head(let head) = bytes.withUnsafeBytes({ HTTPHead.scan($0) }) else {
            Issue.record("not scanned: \(answer)")
            return
        }
        #expect(bytes.withUnsafeBytes { head.framedBodyLength(in: $0) } == length, "\(answer)")
    }
}
