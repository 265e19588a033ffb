import FulcrumCore

/// Flow → backend pinning for the modes where replies bypass the balancer (DSR, tunnel): the first packet
/// of a flow picks through the pool's selector with the 5-tuple hash, later packets reuse that backend even
/// when the pool changes (a Maglev table change would otherwise move established connections).
public final class BackendFlows {
    public let flows: FlowTable<Backend>
    /// Where inserted and removed flows are recorded for HA mirroring (`FlowMirroring.swift`).
    var changeLog: FlowChangeLog?

    public init(capacity: Int, timeouts: FlowTimeouts) {
        flows = FlowTable(capacity: capacity, timeouts: timeouts)
        flows.onRemove = { backend in backend.connectionClosed() }
    }

    /// The backend of the flow `key` (created if needed).
    public func backend(
        for key: FlowKey, tcpFlags: UInt8, snapshot: PoolSnapshot, now: UInt64
    ) throws(DropReason) -> Backend {
        let isTCP = key.proto == IPProtocolNumber.tcp
        let isNewConnection = isTCP && tcpFlags & (TCPFlags.syn | TCPFlags.ack) == TCPFlags.syn
        if let (slot, _) = flows.lookup(key, now: now) {
            let state = flows.state(slot)
            if !(isNewConnection && (state == .closing || state == .closed)) {
                flows.touch(slot, tcpFlags: tcpFlags, isTCP: isTCP, now: now)
                return flows.value(slot)
            }
            flows.remove(slot)
        }
        // Mid-stream packets without state (another node's flow after an ECMP change, or a restart) are
        // hashed like a new flow: with Maglev they land where the original node sent them.
        guard let backend = snapshot.pick(flow: key, now: now) else { throw .noBackend }
        backend.connectionOpened()
        let state: FlowState = isTCP ? FlowTable<Backend>.advance(.datagram, tcpFlags: tcpFlags) : .datagram
        flows.insert(key, value: backend, state: state, now: now)
        return backend
    }
}
