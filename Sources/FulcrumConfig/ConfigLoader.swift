import FulcrumCore
import Yams

/// Turns the text of a config file into a validated `FulcrumConfig`, or every problem found in it.
///
/// The caller reads the file (this module does no IO). The YAML is composed into a node tree and walked
/// by hand rather than decoded with `Codable`, so that one run reports all the problems, each with its
/// path and line:column, and unknown keys are errors instead of being ignored.
public enum ConfigLoader {
    static let rootKeys = [
        "version", "workers", "admin", "pools", "listeners", "virtual_services", "ha", "cluster", "access_log",
    ]

    /// Deeper nesting than this is refused before parsing: the YAML composer recurses once per level.
    static let maximumNesting = 64

    /// Parses and validates `yaml`. Throws every problem at once, in document order.
    public static func load(yaml: String) throws(ConfigErrors) -> FulcrumConfig {
        let context = DecodingContext()
        let config = decode(yaml: yaml, context: context)
        let diagnostics = sortedInDocumentOrder(context.diagnostics)
        guard let config, diagnostics.isEmpty else {
            throw ConfigErrors(
                diagnostics: diagnostics.isEmpty
                    ? [ConfigDiagnostic(path: "", line: nil, column: nil, message: "invalid configuration")]
                    : diagnostics)
        }
        return config
    }

    private static func decode(yaml: String, context: DecodingContext) -> FulcrumConfig? {
        if let finding = Preflight.check(yaml, nestingLimit: maximumNesting) {
            context.report(.root, line: finding.line, column: finding.column, finding.message)
            return nil
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            let (message, position) = describe(yamlError: error, in: yaml)
            context.report(.root, line: position?.line, column: position?.column, message)
            return nil
        }
        guard let root, !root.isNullScalar else {
            context.report(.root, nil, "the configuration is empty (expected a mapping with pools, listeners, …)")
            return nil
        }
        guard case .mapping = root else {
            context.report(
                .root, at: root,
                "expected a mapping of sections (pools, listeners, …), found \(root.foundDescription)")
            return nil
        }
        guard let map = context.mapping(root, at: .root, keys: rootKeys, allowExtensions: true) else { return nil }
        if map.entries.isEmpty && context.diagnostics.isEmpty {
            context.report(.root, at: root, "the configuration is empty (expected a mapping with pools, listeners, …)")
            return nil
        }
        return decodeSections(map, context: context)
    }

    private static func decodeSections(_ map: MappingReader, context: DecodingContext) -> FulcrumConfig {
        var config = FulcrumConfig()
        if let versionNode = map.value("version"),
            let version = context.int(versionNode, at: .root.key("version"), in: Int.min...Int.max), version != 1
        {
            context.report(.root.key("version"), at: versionNode, "unsupported version \(version) (expected 1)")
        }
        config.workers = map.int("workers", in: 1...1024)
        if let adminNode = map.entry("admin")?.value {
            config.admin = AdminConfig.decode(adminNode, at: .root.key("admin"), context: context)
        }
        if let accessLogNode = map.value("access_log") {
            config.accessLog = AccessLogConfig.decode(accessLogNode, at: .root.key("access_log"), context: context)
        }

        var catalog = PoolCatalog(names: [], pools: [:])
        if let poolsNode = map.value("pools"), let entries = context.entries(of: poolsNode, at: .root.key("pools")) {
            for entry in entries {
                let path = YAMLPath.root.key("pools").key(entry.key.shortenedForMessage)
                if !PoolConfig.isValidName(entry.key) {
                    context.report(
                        path, at: entry.keyNode,
                        "invalid pool name '\(entry.key.shortenedForMessage)' (use letters, digits, '_', '.', '-')")
                }
                let pool = PoolConfig.decode(name: entry.key, node: entry.value, at: path, context: context)
                // Keep even a pool with errors in the catalog so references to it are not reported as well.
                catalog.names.append(entry.key)
                catalog.pools[entry.key] = pool
                config.pools.append(pool)
            }
        }

        if let items = map.list("listeners") {
            config.listeners = ListenerConfig.decodeAll(
                items, at: .root.key("listeners"), pools: catalog, adminListen: config.admin?.listen,
                context: context)
        }
        if let items = map.list("virtual_services") {
            config.virtualServices = VirtualServiceConfig.decodeAll(
                items, at: .root.key("virtual_services"), pools: catalog, context: context)
        }
        if let haNode = map.value("ha") {
            config.ha = HAConfig.decode(haNode, at: .root.key("ha"), context: context)
        }
        if let clusterNode = map.value("cluster") {
            config.cluster = ClusterConfig.decode(clusterNode, at: .root.key("cluster"), context: context)
        }
        if config.cluster?.store == .etcd {
            // Two sources for one pool would disagree sooner or later: in a cluster these live in etcd only.
            for section in ["pools", "listeners", "virtual_services"] {
                map.reject(
                    section,
                    "with cluster.store etcd, \(section) live in etcd: remove them from this file "
                        + "(`fulcrum cluster seed FILE` writes a file's \(section) into an empty prefix)")
            }
        }
        return config
    }

    /// Document-level problems (no position) first, then by line and column; ties keep the order found.
    static func sortedInDocumentOrder(_ diagnostics: [ConfigDiagnostic]) -> [ConfigDiagnostic] {
        diagnostics.enumerated()
            .sorted { a, b in
                let keyA = (a.element.line ?? 0, a.element.column ?? 0, a.offset)
                let keyB = (b.element.line ?? 0, b.element.column ?? 0, b.offset)
                return keyA < keyB
            }
            .map(\.element)
    }

    /// A one-line message and the position of a Yams error.
    static func describe(yamlError error: any Error, in yaml: String) -> (String, (line: Int, column: Int)?) {
        guard let yamlError = error as? YamlError else {
            return ("YAML error: \(String(describing: error).shortenedForMessage)", nil)
        }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _),
            .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            if problem == "but found another document" {
                return ("only one YAML document is allowed (found a second '---')", (mark.line, mark.column))
            }
            var message = "YAML syntax error: \(problem)"
            if let context, !context.text.isEmpty {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            return (message, (mark.line, mark.column))
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.map { "'\($0.shortenedForMessage)'" }.joined(separator: ", ")
            return ("duplicate key \(keys) in a mapping", (context.mark.line, context.mark.column))
        case .reader(let problem, let offset, _, _):
            return ("YAML error: \(problem)", offset.map { mark(atCharacterOffset: $0, in: yaml) })
        default:
            return ("YAML error: \(String(describing: yamlError).shortenedForMessage)", nil)
        }
    }

    private static func mark(atCharacterOffset offset: Int, in text: String) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for character in text.prefix(max(0, offset)) {
            if character == "\n" || character == "\r\n" {
                line += 1
                column = 1
            } else {
                column += character.unicodeScalars.count
            }
        }
        return (line, column)
    }
}
