import FulcrumConfig
import FulcrumCore
import Yams

/// Writes the shared documents: the seed (a config file's pools, listeners and virtual services cut into
/// one document per key) and the admin API's edits of a pool document (scale-out/in, weight, state).
///
/// Both work on the YAML *node tree*, not on the model: a document is the file's own subtree, serialized
/// again, so what an operator wrote (durations as `2s`, flow style, keys the model defaults) survives
/// seeding and edits, and there is no second writer of every pool option to keep in step with the
/// loader. What comes out is checked by the one loader (``ConfigAssembler``) before anything is written.
public enum ClusterDocuments {
    /// Why a text cannot be cut or edited.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The config file does not validate (its diagnostics, one per line).
        case invalidConfig(String)
        /// The document is not a YAML mapping as the layout expects.
        case malformed(String)
        /// The backend is not in the pool document.
        case unknownBackend(Endpoint)
        /// The backend is already in the pool document.
        case duplicateBackend(Endpoint)

        public var description: String {
            switch self {
            case .invalidConfig(let text): "the config does not validate:\n\(text)"
            case .malformed(let detail): "the document cannot be edited: \(detail)"
            case .unknownBackend(let endpoint): "no backend \(endpoint) in the pool document"
            case .duplicateBackend(let endpoint): "backend \(endpoint) is already in the pool document"
            }
        }
    }

    // MARK: Seeding

    /// The documents of a config file: `pools/<name>` for each pool, `listeners/<name>` for each listener,
    /// `virtual_services/<name>` for each virtual service (its `name`, or `<vip>-<port>-<protocol>`).
    /// The file must validate on its own; the node's own sections (admin, ha, cluster, …) are not documents.
    public static func split(configText: String) throws(Failure) -> [ClusterKey: String] {
        let config: FulcrumConfig
        do {
            config = try ConfigLoader.load(yaml: configText)
        } catch {
            throw .invalidConfig(error.diagnostics.map(\.description).joined(separator: "\n"))
        }
        guard let root = try? Yams.compose(yaml: configText), let mapping = root.mapping else {
            throw .malformed("the config is not a YAML mapping")
        }
        var documents: [ClusterKey: String] = [:]
        if let pools = mapping["pools"]?.mapping {
            for (key, value) in pools {
                guard let name = key.string else { continue }
                // `web:` with nothing under it is a pool with defaults: `{}` says so as a document.
                documents[.pool(name)] = value.isNull ? "{}\n" : try render(value)
            }
        }
        for (index, item) in (mapping["listeners"]?.sequence.map(Array.init) ?? []).enumerated()
        where index < config.listeners.count {
            documents[.listener(config.listeners[index].name)] = try render(item)
        }
        for (index, item) in (mapping["virtual_services"]?.sequence.map(Array.init) ?? []).enumerated()
        where index < config.virtualServices.count {
            documents[.virtualService(documentName(of: config.virtualServices[index]))] = try render(item)
        }
        return documents
    }

    /// The key name of a virtual service: its `name`, or one made of its address.
    public static func documentName(of service: VirtualServiceConfig) -> String {
        service.name ?? "\(service.vip)-\(service.port)-\(service.protocol.rawValue)"
    }

    // MARK: Editing a pool document

    /// One admin change to a pool's backends.
    public enum BackendChange: Sendable, Equatable {
        case add(BackendSpec)
        case remove(Endpoint)
        case weight(Endpoint, Int)
        /// `enabled` removes the key (the default).
        case state(Endpoint, AdminState)
    }

    /// The pool document `text` with `change` applied to its `backends`. Other keys are kept as written.
    public static func edit(poolDocument text: String, _ change: BackendChange) throws(Failure) -> String {
        let parsed: Node?
        do {
            parsed = try Yams.compose(yaml: text)
        } catch {
            throw .malformed("\(error)")
        }
        var pool: Node.Mapping
        switch parsed {
        case nil: pool = Node.Mapping([])
        case .some(let node) where node.isNull: pool = Node.Mapping([])
        case .some(let node):
            guard let mapping = node.mapping else { throw .malformed("a pool document is a mapping") }
            pool = mapping
        }
        var backends: [Node] = []
        if let node = pool["backends"], !node.isNull {
            guard let sequence = node.sequence else { throw .malformed("backends is not a list") }
            backends = Array(sequence)
        }
        let index = backends.firstIndex { address(of: $0) == change.endpoint }
        switch change {
        case .add(let spec):
            guard index == nil else { throw .duplicateBackend(spec.endpoint) }
            var pairs: [(Node, Node)] = [("address", Node(spec.endpoint.description))]
            if spec.weight != 1 { pairs.append(("weight", Node(String(spec.weight)))) }
            if spec.backup { pairs.append(("backup", "true")) }
            backends.append(.mapping(Node.Mapping(pairs, .implicit, .flow)))
        case .remove(let endpoint):
            guard let index else { throw .unknownBackend(endpoint) }
            backends.remove(at: index)
        case .weight(let endpoint, let weight):
            guard let index else { throw .unknownBackend(endpoint) }
            backends[index] = set("weight", weight == 1 ? nil : Node(String(weight)), in: backends[index])
        case .state(let endpoint, let state):
            guard let index else { throw .unknownBackend(endpoint) }
            backends[index] = set("state", state == .enabled ? nil : Node(state.rawValue), in: backends[index])
        }
        pool["backends"] = .sequence(Node.Sequence(backends, .implicit, .block))
        return try render(.mapping(pool))
    }

    /// A backend item with `key` set (nil: removed); a bare `- 10.0.0.1:80` becomes a mapping.
    private static func set(_ key: String, _ value: Node?, in item: Node) -> Node {
        var mapping = item.mapping ?? Node.Mapping([("address", item)], .implicit, .flow)
        mapping[key] = value
        if mapping.count == 1, let address = mapping["address"] { return address }
        return .mapping(mapping)
    }

    /// The endpoint a backend item names, parsed like the loader does.
    private static func address(of item: Node) -> Endpoint? {
        let text = item.mapping?["address"]?.string ?? item.string
        return text.flatMap { Endpoint($0) }
    }

    private static func render(_ node: Node) throws(Failure) -> String {
        do {
            return try Yams.serialize(node: node)
        } catch {
            throw .malformed("\(error)")
        }
    }
}

extension ClusterDocuments.BackendChange {
    var endpoint: Endpoint {
        switch self {
        case .add(let spec): spec.endpoint
        case .remove(let endpoint), .weight(let endpoint, _), .state(let endpoint, _): endpoint
        }
    }
}

extension Node {
    fileprivate var isNull: Bool {
        if case .scalar(let scalar) = self {
            return scalar.string == "" || scalar.string == "~" || scalar.string == "null"
        }
        return false
    }
}
