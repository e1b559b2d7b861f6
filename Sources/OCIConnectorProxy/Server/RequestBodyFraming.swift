import NIOHTTP1

extension HTTPRequestHead {
    /// Whether the head announces a body: a `Transfer-Encoding`, or a `Content-Length` above 0.
    /// NIO's decoder has already refused heads that frame a body ambiguously, so these two are
    /// the whole of it; every part of the proxy that cares asks here.
    var announcesBody: Bool {
        headers.contains(name: "Transfer-Encoding")
            || (headers.first(name: "Content-Length").flatMap { Int($0) } ?? 0) > 0
    }
}
