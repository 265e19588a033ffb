#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 that nothing listens on now, for a process a test starts (etcd, `fulcrum run`).
/// It is drawn below the kernel's ephemeral range (`ip_local_port_range` starts at 32768 by default), so
/// neither outgoing connections nor other listeners on port 0 take it between this check and the child's
/// bind. Port 0's pick is the fallback; nil only when no socket can be bound at all.
public func freeLoopbackPort() -> Int? {
    for _ in 0..<64 {
        if let port = bindableLoopbackPort(Int.random(in: 20_000..<32_000)) { return port }
    }
    return bindableLoopbackPort(0)
}

/// Binds 127.0.0.1:`port` (0: any), releases it, and returns the port that was bound.
private func bindableLoopbackPort(_ port: Int) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            bind(fd, socketAddress, length) == 0 && getsockname(fd, socketAddress, &length) == 0
        }
    }
    return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
}
