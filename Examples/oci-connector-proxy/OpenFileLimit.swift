#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open files, which bounds its connections: each client connection and
/// each upstream one is a descriptor.
///
/// Containers often start with a soft limit of 1024 under a much higher hard limit (containerd 2
/// and systemd's defaults), below the proxy's own `--max-connections` (4096): past it, accepting
/// fails. As Go programs do at start, the proxy raises its soft limit to the hard one.
enum OpenFileLimit {
    /// Raises the soft limit to the hard one; the limit in force afterwards (`nil` if unknown).
    static func raise() -> UInt64? {
        var limit = rlimit()
        #if canImport(Glibc)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(resource, &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}
