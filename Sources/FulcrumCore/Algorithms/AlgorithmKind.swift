/// The algorithms Fulcrum can balance with, by their config name.
public enum AlgorithmKind: String, CaseIterable, Sendable, Codable {
    case roundRobin = "round-robin"
    case weightedRoundRobin = "weighted-round-robin"
    case leastConnections = "least-connections"
    case leastResponseTime = "least-response-time"
    case powerOfTwo = "power-of-two"
    case random = "random"
    case sourceHash = "source-hash"
    case hash = "hash"
    case ringHash = "ring-hash"
    case maglev = "maglev"
    case boundedLoad = "bounded-load"

    /// Algorithms that pick from the request's key hash (and so need a `hash_key`, or use the source address).
    public var usesKey: Bool {
        switch self {
        case .sourceHash, .hash, .ringHash, .maglev, .boundedLoad: return true
        default: return false
        }
    }

    /// One line on when to use it (README and `fulcrum validate --help`).
    public var summary: String {
        switch self {
        case .roundRobin: return "each backend in turn; ignores weights. Equal backends, short equal requests."
        case .weightedRoundRobin:
            return "nginx's smooth weighted round robin: shares follow weights with no bursts to the heavy one."
        case .leastConnections:
            return "fewest active connections per unit of weight; ties rotate. Long or uneven connections."
        case .leastResponseTime:
            return "lowest peak-EWMA latency × (in-flight + 1), of two random choices. Backends of uneven speed."
        case .powerOfTwo: return "two random backends, the less loaded wins. Large pools, many balancer nodes."
        case .random: return "weighted random. Many balancer nodes with no shared state."
        case .sourceHash: return "hash of the client address over the weighted table: a client sticks to a backend."
        case .hash: return "hash of a header, cookie or the URI over the weighted table: a key sticks to a backend."
        case .ringHash:
            return "ketama consistent hash ring: a key sticks, and only ≈1/N of keys move when the pool changes."
        case .maglev:
            return "Maglev table (NSDI '16): O(1) consistent hash, even shares; default for the packet plane."
        case .boundedLoad:
            return "consistent hash with bounded load: sticky, but no backend exceeds ⌈(1+ε)·mean⌉ connections."
        }
    }
}
