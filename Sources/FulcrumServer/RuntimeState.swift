import Foundation
import FulcrumConfig
import FulcrumCore

/// Run-time pool changes made through the admin API, kept as an overlay on the config file and
/// written to `admin.state_file` (temp file + rename) so they survive a restart or a reload.
/// On start and on every reload the overlay is applied on top of the file's pools.
struct RuntimeState: Codable, Equatable {
    struct PoolChanges: Codable, Equatable {
        struct Added: Codable, Equatable {
            var address: String
            var weight: Int
            var backup: Bool
        }
        var added: [Added] = []
        var removed: [String] = []
        var weights: [String: Int] = [:]
        /// What an operator set: `enabled`, `draining` or `disabled`. `enabled` is kept too, because the
        /// file may say `state: draining` and the operator's last word wins, as for weights.
        var admin: [String: String] = [:]

        var isEmpty: Bool { added.isEmpty && removed.isEmpty && weights.isEmpty && admin.isEmpty }
    }

    var version = 1
    var pools: [String: PoolChanges] = [:]

    // MARK: Recording changes

    mutating func recordAdd(pool: String, _ spec: BackendSpec) {
        let address = spec.endpoint.description
        pools[pool, default: PoolChanges()].removed.removeAll { $0 == address }
        pools[pool, default: PoolChanges()].added.removeAll { $0.address == address }
        pools[pool, default: PoolChanges()].added.append(
            .init(address: address, weight: spec.weight, backup: spec.backup))
    }

    mutating func recordRemove(pool: String, _ endpoint: Endpoint) {
        let address = endpoint.description
        var changes = pools[pool, default: PoolChanges()]
        if changes.added.contains(where: { $0.address == address }) {
            changes.added.removeAll { $0.address == address }
        } else if !changes.removed.contains(address) {
            changes.removed.append(address)
        }
        changes.weights[address] = nil
        changes.admin[address] = nil
        pools[pool] = changes.isEmpty ? nil : changes
    }

    mutating func recordWeight(pool: String, _ endpoint: Endpoint, _ weight: Int) {
        let address = endpoint.description
        if let index = pools[pool]?.added.firstIndex(where: { $0.address == address }) {
            pools[pool]?.added[index].weight = weight
        } else {
            pools[pool, default: PoolChanges()].weights[address] = weight
        }
    }

    mutating func recordAdmin(pool: String, _ endpoint: Endpoint, _ state: AdminState) {
        pools[pool, default: PoolChanges()].admin[endpoint.description] = state.rawValue
    }

    // MARK: Applying to a config

    /// The config's pools with the overlay applied (backends removed, added, re-weighted). Changes for
    /// pools the config no longer has are ignored.
    func applied(to config: FulcrumConfig) -> FulcrumConfig {
        var config = config
        for index in config.pools.indices {
            guard let changes = pools[config.pools[index].name] else { continue }
            var backends = config.pools[index].backends.filter { !changes.removed.contains($0.address.description) }
            for added in changes.added {
                guard let endpoint = Endpoint(added.address),
                    !backends.contains(where: { $0.address == endpoint })
                else { continue }
                backends.append(BackendConfig(address: endpoint, weight: added.weight, backup: added.backup))
            }
            for backendIndex in backends.indices {
                let address = backends[backendIndex].address.description
                if let weight = changes.weights[address] {
                    backends[backendIndex].weight = weight
                }
                if let state = changes.admin[address].flatMap(AdminState.init(rawValue:)) {
                    backends[backendIndex].state = state
                }
            }
            config.pools[index].backends = backends
        }
        return config
    }

    // MARK: The file

    static func load(from path: String) throws -> RuntimeState {
        guard FileManager.default.fileExists(atPath: path) else { return RuntimeState() }
        return try JSONDecoder().decode(RuntimeState.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Writes atomically: a temporary file in the same directory, then a rename over the old one.
    func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        let temporary = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "rename to \(path): \(reason)"])
        }
    }
}
