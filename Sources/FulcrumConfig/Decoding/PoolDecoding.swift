import FulcrumCore
import Yams

extension PoolConfig {
    static let keys = [
        "algorithm", "hash_key", "health_check", "outlier_detection", "slow_start", "maglev_table_size",
        "bounded_load_factor", "backends",
    ]

    /// Pool names appear in metrics labels and admin URLs.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.unicodeScalars.allSatisfy {
                switch $0 {
                case "a"..."z", "A"..."Z", "0"..."9", "_", ".", "-": return true
                default: return false
                }
            }
    }

    static func decode(name: String, node: Node, at path: YAMLPath, context: DecodingContext) -> PoolConfig {
        var pool = PoolConfig(name: name)
        // `web:` with nothing under it is a pool with defaults and no backends yet.
        if node.isNullScalar { return pool }
        guard let map = context.mapping(node, at: path, keys: keys) else { return pool }

        // An invalid algorithm was reported; checks that depend on it are skipped rather than guessed.
        let algorithm: AlgorithmKind? =
            map.value("algorithm") == nil
            ? .weightedRoundRobin : map.choice("algorithm", noun: "algorithm")
        pool.algorithm = algorithm ?? .weightedRoundRobin

        decodeHashKey(map, algorithm: algorithm, into: &pool)

        if let node = map.value("health_check") {
            pool.healthCheck = HealthCheckConfig.decode(node, at: path.key("health_check"), context: context)
        }
        if let node = map.value("outlier_detection") {
            pool.outlierDetection = OutlierDetectionConfig.decode(
                node, at: path.key("outlier_detection"), context: context)
        }
        pool.slowStart = map.optionalDuration("slow_start", maximum: .seconds(3600), positive: true)

        if let items = map.list("backends") {
            pool.backends = decodeBackends(items, at: path.key("backends"), context: context)
        }

        if map.has("maglev_table_size"), let algorithm, algorithm != .maglev {
            map.reject("maglev_table_size", "only used by algorithm maglev")
        } else if let sizeNode = map.value("maglev_table_size") {
            let sizePath = path.key("maglev_table_size")
            if let size = context.int(sizeNode, at: sizePath, in: 1...maximumMaglevTableSize) {
                if !Maglev.isPrime(size) {
                    context.report(sizePath, at: sizeNode, "must be a prime number (e.g. 65537, 655373)")
                } else if size < 2 * pool.backends.count {
                    context.report(
                        sizePath, at: sizeNode,
                        "must be ≥ 2 × the number of backends (\(2 * pool.backends.count)) for even shares")
                }
                pool.maglevTableSize = size
            }
        } else if algorithm == .maglev, pool.maglevTableSize < 2 * pool.backends.count {
            context.report(
                path.key("maglev_table_size"), node.mark,
                "the default \(defaultMaglevTableSize) is too small for \(pool.backends.count) backends; "
                    + "set a prime ≥ \(2 * pool.backends.count)")
        }

        if map.has("bounded_load_factor"), let algorithm, algorithm != .boundedLoad {
            map.reject("bounded_load_factor", "only used by algorithm bounded-load")
        } else {
            pool.boundedLoadFactor = map.double(
                "bounded_load_factor", in: 0...10, above: true, default: defaultBoundedLoadFactor)
        }
        return pool
    }

    private static func decodeHashKey(_ map: MappingReader, algorithm: AlgorithmKind?, into pool: inout PoolConfig) {
        let keyPath = map.path.key("hash_key")
        guard let keyNode = map.value("hash_key") else {
            if algorithm == .hash {
                map.context.report(
                    keyPath, map.node.mark, "required by algorithm hash (e.g. hash_key: header:X-User)")
            }
            return
        }
        guard let text = map.context.string(keyNode, at: keyPath) else { return }
        switch HashKey.parse(text.trimmingSpaces) {
        case .failure(let error):
            map.context.report(keyPath, at: keyNode, error.description)
        case .success(let key):
            guard let algorithm else { return }
            if !algorithm.usesKey {
                let users = AlgorithmKind.allCases.filter(\.usesKey).map(\.rawValue).joined(separator: ", ")
                map.context.report(keyPath, at: keyNode, "hash_key is only used by \(users)")
            } else if algorithm == .sourceHash, key != .source {
                map.context.report(
                    keyPath, at: keyNode,
                    "source-hash always hashes the client address; use algorithm hash (or ring-hash, maglev, "
                        + "bounded-load) to hash \(key)")
            } else {
                pool.hashKey = key
            }
        }
    }

    private static func decodeBackends(
        _ items: [Node], at path: YAMLPath, context: DecodingContext
    )
        -> [BackendConfig]
    {
        var backends: [BackendConfig] = []
        var firstIndex: [Endpoint: Int] = [:]
        for (index, item) in items.enumerated() {
            let itemPath = path.index(index)
            var backend: BackendConfig?
            var addressNode = item
            switch item {
            case .scalar where !item.isNullScalar:
                backend = context.endpoint(item, at: itemPath).map { BackendConfig(address: $0) }
            case .mapping:
                guard let map = context.mapping(item, at: itemPath, keys: ["address", "weight", "backup", "state"])
                else {
                    continue
                }
                addressNode = map.value("address") ?? item
                let weight = map.int("weight", in: BackendConfig.weightRange, default: 1)
                let isBackup = map.bool("backup", default: false)
                let state: AdminState? = map.choice("state", noun: "backend state")
                backend = map.requiredEndpoint("address").map {
                    BackendConfig(address: $0, weight: weight, backup: isBackup, state: state == .enabled ? nil : state)
                }
            default:
                context.report(
                    itemPath, at: item,
                    "expected an address (10.0.0.1:80) or a mapping with address, found \(item.foundDescription)")
            }
            guard let backend else { continue }
            if let first = firstIndex[backend.address] {
                context.report(
                    item.isMappingNode ? itemPath.key("address") : itemPath, at: addressNode,
                    "duplicate backend \(backend.address) (already \(path.index(first).lastComponent))")
                continue
            }
            firstIndex[backend.address] = index
            backends.append(backend)
        }
        return backends
    }
}

extension YAMLPath {
    /// `backends[0]` out of `pools.web.backends[0]`, for "already …" messages.
    var lastComponent: String {
        String(description.split(separator: ".").last ?? Substring(description))
    }
}

extension Node {
    var isMappingNode: Bool {
        if case .mapping = self { return true }
        return false
    }
}
