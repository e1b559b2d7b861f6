import Foundation
import Logging
import Synchronization

/// Writes one line per log event to standard error, in the same format as swift-log's
/// `StreamLogHandler`: `TIME LEVEL LABEL: key=value … [SOURCE] MESSAGE`.
///
/// The proxy writes a line for every request at the default level, so the line is built for
/// speed. Metadata is formatted only when a line is written: `StreamLogHandler` formats it every
/// time a key is set (with a key set per request, that was about 4 % of the proxy's CPU per
/// manifest request). The line is assembled in one string and
/// written with one `write(2)`, and the timestamp is formatted once per second: before, a
/// request's line cost about a sixth of the proxy's CPU for a manifest `HEAD`.
///
/// With ``Format/json`` each line is one JSON object instead, for log collectors: `time`,
/// `level`, `label`, `message`, `source` and every metadata key at the top level, numbers as
/// numbers.
struct LineLogHandler: LogHandler {
    /// How a line is written.
    enum Format: String, CaseIterable {
        case text
        case json
    }

    var logLevel: Logger.Level = .info
    var format = Format.text
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    let label: String

    init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        // The event's own metadata wins over the provider's, which wins over the handler's.
        var merged = event.metadata ?? [:]
        if let provided = metadataProvider?.get() { merged.merge(provided) { explicit, _ in explicit } }
        if !metadata.isEmpty { merged.merge(metadata) { explicit, _ in explicit } }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        if format == .json {
            writeJSON(event, merged)
            return
        }
        var fields = ""
        fields.reserveCapacity(32 * merged.count)
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            fields += " "
            fields += key
            fields += "="
            fields += value.description
        }
        let message = "\(event.message)"
        let source = event.source
        let level = event.level.rawValue
        Self.output.withLock { timestamp in
            var line = timestamp.text()
            line.reserveCapacity(
                line.utf8.count + fields.utf8.count + label.utf8.count + source.utf8.count + message.utf8.count + 16)
            line += " "
            line += level
            line += " "
            line += label
            line += ":"
            line += fields
            line += " ["
            line += source
            line += "] "
            line += message
            line += "\n"
            Self.writeToStandardError(&line)
        }
    }

    private func writeJSON(_ event: LogEvent, _ metadata: Logger.Metadata) {
        var body = ""
        body.reserveCapacity(64 + 32 * metadata.count)
        body += ",\"level\":"
        Self.appendJSON(string: event.level.rawValue, to: &body)
        body += ",\"label\":"
        Self.appendJSON(string: label, to: &body)
        body += ",\"message\":"
        Self.appendJSON(string: "\(event.message)", to: &body)
        body += ",\"source\":"
        Self.appendJSON(string: event.source, to: &body)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key })
        where !["time", "level", "label", "message", "source"].contains(key) {
            body += ","
            Self.appendJSON(string: key, to: &body)
            body += ":"
            Self.appendJSON(value, to: &body)
        }
        body += "}\n"
        Self.output.withLock { timestamp in
            var line = "{\"time\":\"" + timestamp.text() + "\"" + body
            Self.writeToStandardError(&line)
        }
    }

    /// A metadata value as JSON: numbers (integers and floating point given as such) stay
    /// numbers, everything else is a string, an array or an object.
    static func appendJSON(_ value: Logger.Metadata.Value, to output: inout String) {
        switch value {
        case .string(let text):
            appendJSON(string: text, to: &output)
        case .stringConvertible(let convertible):
            switch convertible {
            case let number as any BinaryInteger: output += "\(number)"
            case let number as Double where number.isFinite: output += "\(number)"
            default: appendJSON(string: convertible.description, to: &output)
            }
        case .array(let values):
            output += "["
            for (index, element) in values.enumerated() {
                if index > 0 { output += "," }
                appendJSON(element, to: &output)
            }
            output += "]"
        case .dictionary(let entries):
            output += "{"
            for (index, (key, element)) in entries.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { output += "," }
                appendJSON(string: key, to: &output)
                output += ":"
                appendJSON(element, to: &output)
            }
            output += "}"
        }
    }

    /// `text` as a JSON string: quotes, backslashes and control characters escaped.
    static func appendJSON(string text: String, to output: inout String) {
        output += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }

    /// Keeps lines from different threads whole, and the timestamp of the current second.
    private static let output = Mutex(SecondTimestamp())

    /// The local time of the current second, as `StreamLogHandler` writes it.
    struct SecondTimestamp {
        private var second = time_t(-1)
        private var formatted = ""

        mutating func text() -> String {
            var now = time(nil)
            if now != second {
                var local = tm()
                localtime_r(&now, &local)
                var buffer = [CChar](repeating: 0, count: 64)
                let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
                formatted = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                second = now
            }
            return formatted
        }
    }

    /// Writes all of `line`, retrying after signals and short writes; a line that cannot be
    /// written is dropped, as `FileHandle` would drop it.
    private static func writeToStandardError(_ line: inout String) {
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}
