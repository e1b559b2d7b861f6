import Foundation
public import NIOHTTP1

/// Errors in the distribution API's own format: `{"errors":[{"code":…,"message":…}]}`.
public struct RegistryErrorResponse: Error, Sendable {
    /// The HTTP status.
    public let status: HTTPResponseStatus
    /// The distribution error code, such as `NAME_INVALID`.
    public let code: String
    /// A message for people. Never holds a credential or a token.
    public let message: String
    /// Extra headers, such as a challenge.
    public var headers = HTTPHeaders()

    /// Creates an error response.
    public init(_ status: HTTPResponseStatus, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    /// The response's headers: ``headers`` plus the content type and the distribution API version.
    var responseHeaders: HTTPHeaders {
        var headers = self.headers
        headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        headers.replaceOrAdd(name: "Docker-Distribution-API-Version", value: "registry/2.0")
        return headers
    }

    /// The response's body, in the distribution error format.
    var json: String {
        #"{"errors":[{"code":"\#(code)","message":"\#(Self.escape(message))"}]}"# + "\n"
    }

    static func escape(_ text: String) -> String {
        var output = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20: output += String(format: "\\u%04x", scalar.value)
            default: output.unicodeScalars.append(scalar)
            }
        }
        return output
    }
}
