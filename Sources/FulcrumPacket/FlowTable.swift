/// Where a flow is in its life, as far as the balancer can tell from the packets it sees.
public enum FlowState: UInt8, Sendable, CaseIterable {
    /// Only a SYN seen so far (half-open: the short timeout limits SYN floods).
    case synSent
    case established
    /// A FIN seen in either direction.
    case closing
    /// A RST seen: the flow is over, kept briefly for stray packets.
    case closed
    /// UDP and ICMP have no state: one timeout since the last packet.
    case datagram
}

/// Idle timeouts per state, in nanoseconds (defaults close to IPVS's).
public struct FlowTimeouts: Sendable, Equatable {
    public var syn: UInt64 = 30_000_000_000
    public var established: UInt64 = 900_000_000_000
    public var closing: UInt64 = 60_000_000_000
    public var closed: UInt64 = 10_000_000_000
    public var datagram: UInt64 = 300_000_000_000

    public init() {}

    public func timeout(_ state: FlowState) -> UInt64 {
        switch state {
        case .synSent: return syn
        case .established: return established
        case .closing: return closing
        case .closed: return closed
        case .datagram: return datagram
        }
    }

    var minimum: UInt64 { min(syn, established, closing, closed, datagram) }
}

/// What a flow table did, for metrics.
public struct FlowCounters: Sendable, Equatable {
    public var created: UInt64 = 0
    public var expired: UInt64 = 0
    /// Removed while still live because the table was full (least recently used first).
    public var evicted: UInt64 = 0
    /// Removed by the owner (a new SYN reusing a closed flow's tuple, for example).
    public var removed: UInt64 = 0
    public var hits: UInt64 = 0
    public var misses: UInt64 = 0

    public init() {}
}

/// A bounded flow table: 5-tuple → value, with TCP-state-aware idle timeouts and LRU eviction.
///
/// Each entry can be found by its key and by an optional second key (the NAT reply direction). The
/// capacity is a hard bound fixed at creation: storage is allocated once; when it is full the least
/// recently used flow is evicted. Time is injected (`now` in nanoseconds, monotonic).
/// Owned by one packet worker: not thread-safe, and deliberately not `Sendable`.
public final class FlowTable<Value> {
    /// A slot index; valid until the entry is removed.
    public typealias Slot = Int

    public let capacity: Int
    public let timeouts: FlowTimeouts
    public private(set) var counters = FlowCounters()
    /// Called with every value that leaves the table (expiry, eviction, removal), e.g. to free a port.
    public var onRemove: ((Value) -> Void)?
    /// Called with the slot of every flow inserted and the key of every flow that leaves (HA mirroring).
    public var onInserted: ((Slot) -> Void)?
    public var onRemovedKey: ((FlowKey) -> Void)?

    private var index: [FlowKey: Int32]
    private var keys: [FlowKey]
    private var reverseKeys: [FlowKey?]
    private var values: [Value?]
    private var states: [FlowState]
    private var lastSeen: [UInt64]
    // Doubly linked LRU list through slots: head is the most recently used.
    private var prev: [Int32]
    private var next: [Int32]
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var freeSlots: [Int32]

    public init(capacity: Int, timeouts: FlowTimeouts = FlowTimeouts()) {
        precondition(capacity > 0 && capacity < Int(Int32.max), "flow table capacity must be positive")
        self.capacity = capacity
        self.timeouts = timeouts
        let zero = FlowKey(source: 0, destination: 0, sourcePort: 0, destinationPort: 0, proto: 0)
        index = Dictionary(minimumCapacity: capacity * 2)
        keys = Array(repeating: zero, count: capacity)
        reverseKeys = Array(repeating: nil, count: capacity)
        values = Array(repeating: nil, count: capacity)
        states = Array(repeating: .datagram, count: capacity)
        lastSeen = Array(repeating: 0, count: capacity)
        prev = Array(repeating: -1, count: capacity)
        next = Array(repeating: -1, count: capacity)
        freeSlots = (0..<Int32(capacity)).reversed()
    }

    public var count: Int { capacity - freeSlots.count }

    /// The live flow with this key (either of its keys), or nil. An expired flow found here is removed.
    /// `isReverse` tells which key matched. Does not refresh the flow: call `touch`.
    public func lookup(_ key: FlowKey, now: UInt64) -> (slot: Slot, isReverse: Bool)? {
        guard let s = index[key] else {
            counters.misses &+= 1
            return nil
        }
        let slot = Int(s)
        if isExpired(slot, now: now) {
            counters.expired &+= 1
            unlink(slot)
            counters.misses &+= 1
            return nil
        }
        counters.hits &+= 1
        return (slot, keys[slot] != key)
    }

    public func value(_ slot: Slot) -> Value { values[slot]! }
    public func state(_ slot: Slot) -> FlowState { states[slot] }
    public func key(_ slot: Slot) -> FlowKey { keys[slot] }
    public func reverseKey(_ slot: Slot) -> FlowKey? { reverseKeys[slot] }
    /// When the flow last saw a packet.
    public func lastSeen(_ slot: Slot) -> UInt64 { lastSeen[slot] }

    /// Adds a flow (the caller looked it up first). Evicts the least recently used flow when full.
    @discardableResult
    public func insert(_ key: FlowKey, reverseKey: FlowKey? = nil, value: Value, state: FlowState, now: UInt64) -> Slot
    {
        if freeSlots.isEmpty {
            let victim = Int(tail)
            if isExpired(victim, now: now) { counters.expired &+= 1 } else { counters.evicted &+= 1 }
            unlink(victim)
        }
        let slot = Int(freeSlots.removeLast())
        keys[slot] = key
        reverseKeys[slot] = reverseKey
        values[slot] = value
        states[slot] = state
        lastSeen[slot] = now
        index[key] = Int32(slot)
        if let reverseKey { index[reverseKey] = Int32(slot) }
        pushFront(slot)
        counters.created &+= 1
        onInserted?(slot)
        return slot
    }

    /// Records a packet of the flow: refreshes its idle time and LRU position and advances its TCP state.
    public func touch(_ slot: Slot, tcpFlags: UInt8, isTCP: Bool, now: UInt64) {
        lastSeen[slot] = now
        if isTCP { states[slot] = Self.advance(states[slot], tcpFlags: tcpFlags) }
        if Int32(slot) != head {
            removeFromList(slot)
            pushFront(slot)
        }
    }

    /// The TCP state after a packet with `flags`.
    public static func advance(_ state: FlowState, tcpFlags flags: UInt8) -> FlowState {
        if flags & TCPFlags.rst != 0 { return .closed }
        switch state {
        case .closed: return .closed
        case .closing: return .closing
        case .datagram, .synSent, .established:
            if flags & TCPFlags.fin != 0 { return .closing }
            if flags & TCPFlags.syn != 0 { return state == .datagram ? .synSent : state }
            return .established
        }
    }

    /// Removes a flow now.
    public func remove(_ slot: Slot) {
        counters.removed &+= 1
        unlink(slot)
    }

    /// Removes up to `limit` expired flows, oldest first; returns how many. Stops at the first flow younger
    /// than the shortest timeout (nothing after it in LRU order can have expired).
    @discardableResult
    public func sweep(now: UInt64, limit: Int) -> Int {
        var removed = 0
        var cursor = tail
        var examined = 0
        let youngest = timeouts.minimum
        while cursor >= 0 && examined < limit {
            let slot = Int(cursor)
            cursor = prev[slot]
            examined += 1
            if now &- lastSeen[slot] < youngest && now >= lastSeen[slot] { break }
            if isExpired(slot, now: now) {
                counters.expired &+= 1
                unlink(slot)
                removed += 1
            }
        }
        return removed
    }

    /// Calls `body` with every live flow's slot, most recently used first (for mirroring).
    public func forEachSlot(_ body: (Slot) -> Void) {
        var cursor = head
        while cursor >= 0 {
            let slot = Int(cursor)
            cursor = next[slot]
            body(slot)
        }
    }

    /// Calls `body` with every live flow's key and value (for mirroring and inspection).
    public func forEach(_ body: (FlowKey, Value, FlowState) -> Void) {
        var cursor = head
        while cursor >= 0 {
            let slot = Int(cursor)
            body(keys[slot], values[slot]!, states[slot])
            cursor = next[slot]
        }
    }

    private func isExpired(_ slot: Int, now: UInt64) -> Bool {
        // A clock that went backwards never expires anything.
        now > lastSeen[slot] && now - lastSeen[slot] >= timeouts.timeout(states[slot])
    }

    private func unlink(_ slot: Int) {
        onRemovedKey?(keys[slot])
        index[keys[slot]] = nil
        if let reverse = reverseKeys[slot] { index[reverse] = nil }
        removeFromList(slot)
        let value = values[slot]
        values[slot] = nil
        reverseKeys[slot] = nil
        freeSlots.append(Int32(slot))
        if let value, let onRemove { onRemove(value) }
    }

    private func pushFront(_ slot: Int) {
        prev[slot] = -1
        next[slot] = head
        if head >= 0 { prev[Int(head)] = Int32(slot) }
        head = Int32(slot)
        if tail < 0 { tail = Int32(slot) }
    }

    private func removeFromList(_ slot: Int) {
        let p = prev[slot]
        let n = next[slot]
        if p >= 0 { next[Int(p)] = n } else { head = n }
        if n >= 0 { prev[Int(n)] = p } else { tail = p }
        prev[slot] = -1
        next[slot] = -1
    }
}
