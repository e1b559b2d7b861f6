import Foundation

/// Writes rendered files so that a reader never sees half a file: each is written to a temporary
/// file in the same directory, then renamed into place. Files holding the token get mode 0600.
public enum ConfigWriter {
    /// Writes `files` below `directory`, creating folders as needed.
    public static func write(_ files: [RenderedFile], to directory: String) throws {
        let root = URL(fileURLWithPath: directory)
        for file in files {
            let target = root.appendingPathComponent(file.path)
            let folder = target.deletingLastPathComponent()
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let temporary = folder.appendingPathComponent(".\(target.lastPathComponent).\(UUID().uuidString).tmp")
            let mode: Int = file.isSecret ? 0o600 : 0o644
            guard
                FileManager.default.createFile(
                    atPath: temporary.path, contents: Data(file.contents.utf8), attributes: [.posixPermissions: mode])
            else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: target.path])
            }
            guard rename(temporary.path, target.path) == 0 else {
                try? FileManager.default.removeItem(at: temporary)
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: target.path])
            }
        }
    }
}
