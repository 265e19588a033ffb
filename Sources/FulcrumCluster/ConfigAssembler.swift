import FulcrumConfig
import FulcrumCore

/// Builds one validated `FulcrumConfig` from the node's local settings and the shared documents, with
/// FulcrumConfig's own loader: the documents are placed into one YAML text exactly where they would sit
/// in a config file (`pools.<name>`, an item of `listeners` / `virtual_services`), so there is one parser
/// and one validator of pools, not two. Every diagnostic is mapped back to the key and the line:column
/// inside the document it came from.
public enum ConfigAssembler {
    /// What `assemble` could not build: the problems, and the keys they were traced to.
    public struct Failure: Error, Sendable, Equatable {
        public var problems: [DocumentProblem]
        /// Keys with at least one problem; a problem traced to no key has `key == ""`.
        public var keys: Set<ClusterKey>
    }

    /// Each document's body is indented this much under its slot.
    static let indent = 4

    /// `local` with its pools, listeners and virtual services replaced by those of `documents`.
    /// `documents` holds configuration keys only; node records are not configuration.
    public static func assemble(
        local: FulcrumConfig, documents: [ClusterKey: String]
    ) -> Result<FulcrumConfig, Failure> {
        var early: [DocumentProblem] = []
        var earlyKeys: Set<ClusterKey> = []
        for (key, text) in documents {
            if !key.isConfiguration {
                early.append(DocumentProblem(key: key.relativePath, message: "not a configuration key"))
                earlyKeys.insert(key)
            } else if text.allSatisfy(\.isWhitespace) {
                early.append(DocumentProblem(key: key.relativePath, message: "the document is empty"))
                earlyKeys.insert(key)
            } else if let line = documentMarkerLine(text) {
                // A marker would end the document early inside the assembled text.
                early.append(
                    DocumentProblem(
                        key: key.relativePath, line: line, column: 1,
                        message: "one YAML document per key: '---' and '...' markers are not allowed"))
                earlyKeys.insert(key)
            }
        }
        if !early.isEmpty {
            return .failure(Failure(problems: early.sorted { $0.key < $1.key }, keys: earlyKeys))
        }

        // Each document alone first (with the other pools as empty stubs, so references resolve): a
        // document that is broken by itself — an unclosed bracket above all, which the parser would only
        // notice in the next document — is blamed for certain. What remains are conflicts between documents.
        let poolNames = documents.keys.compactMap { key -> String? in
            if case .pool(let name) = key { name } else { nil }
        }
        var isolated = Failure(problems: [], keys: [])
        for key in documents.keys.sorted() {
            var alone = [key: documents[key] ?? ""]
            if case .pool = key {
            } else {
                for name in poolNames { alone[.pool(name)] = "{}" }
            }
            if case .failure(let failure) = load(AssembledText(local: FulcrumConfig(), documents: alone)) {
                isolated.problems += failure.problems.filter { $0.key == key.relativePath || $0.key.isEmpty }
                isolated.keys.insert(key)
            }
        }
        if !isolated.keys.isEmpty { return .failure(isolated) }

        let text = AssembledText(local: local, documents: documents)
        let loaded: FulcrumConfig
        switch load(text) {
        case .success(let config): loaded = config
        case .failure(let failure): return .failure(failure)
        }

        // A listener's and a virtual service's name is its key; a different name inside is a mistake.
        var problems: [DocumentProblem] = []
        var keys: Set<ClusterKey> = []
        for (listener, key) in zip(loaded.listeners, text.listenerKeys) where listener.name != key.name {
            problems.append(
                DocumentProblem(
                    key: key.relativePath, path: "name",
                    message: "the name '\(listener.name)' differs from the key's name '\(key.name)'"))
            keys.insert(key)
        }
        var services = loaded.virtualServices
        for (index, key) in text.virtualServiceKeys.enumerated() where index < services.count {
            if let name = services[index].name, name != key.name {
                problems.append(
                    DocumentProblem(
                        key: key.relativePath, path: "name",
                        message: "the name '\(name)' differs from the key's name '\(key.name)'"))
                keys.insert(key)
            }
            services[index].name = key.name
        }
        if !problems.isEmpty { return .failure(Failure(problems: problems, keys: keys)) }

        var config = local
        config.pools = loaded.pools
        config.listeners = loaded.listeners
        config.virtualServices = services
        return .success(config)
    }

    private static func load(_ text: AssembledText) -> Result<FulcrumConfig, Failure> {
        do {
            return .success(try ConfigLoader.load(yaml: text.yaml))
        } catch {
            var problems: [DocumentProblem] = []
            var keys: Set<ClusterKey> = []
            for diagnostic in error.diagnostics {
                let (key, problem) = text.locate(diagnostic)
                if let key { keys.insert(key) }
                problems.append(problem)
            }
            return .failure(Failure(problems: problems, keys: keys))
        }
    }

    /// The 1-based line of a `---` or `...` document marker in `text`, if any.
    static func documentMarkerLine(_ text: String) -> Int? {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.hasPrefix("---") || line.hasPrefix("...") || line.hasPrefix("%") { return index + 1 }
        }
        return nil
    }
}

/// The YAML text handed to `ConfigLoader`, and where each document sits in it.
struct AssembledText {
    struct Span {
        var key: ClusterKey
        /// The slot's own line (`  "web":` or `  -`), 1-based.
        var headerLine: Int
        /// The document's first line.
        var bodyLine: Int
        var lastLine: Int
        /// How `ConfigLoader` names the slot in paths (`pools.web`, `listeners[0]`).
        var pathPrefix: String
    }

    private(set) var yaml = ""
    private(set) var spans: [Span] = []
    private(set) var listenerKeys: [ClusterKey] = []
    private(set) var virtualServiceKeys: [ClusterKey] = []
    private var lineCount = 0

    init(local: FulcrumConfig, documents: [ClusterKey: String]) {
        append("version: 1")
        // The admin address takes part in validation: a listener must not bind it.
        if let admin = local.admin {
            append("admin:")
            append("  listen: " + Self.quoted(admin.listen.description))
            if let tokenFile = admin.tokenFile { append("  token_file: " + Self.quoted(tokenFile)) }
        }
        let sorted = documents.keys.sorted()
        let pools = sorted.filter { if case .pool = $0 { true } else { false } }
        listenerKeys = sorted.filter { if case .listener = $0 { true } else { false } }
        virtualServiceKeys = sorted.filter { if case .virtualService = $0 { true } else { false } }
        if !pools.isEmpty {
            append("pools:")
            for key in pools {
                add(key, header: "  " + Self.quoted(key.name) + ":", path: "pools." + Self.pathKey(key.name), documents)
            }
        }
        if !listenerKeys.isEmpty {
            append("listeners:")
            for (index, key) in listenerKeys.enumerated() {
                add(key, header: "  -", path: "listeners[\(index)]", documents)
            }
        }
        if !virtualServiceKeys.isEmpty {
            append("virtual_services:")
            for (index, key) in virtualServiceKeys.enumerated() {
                add(key, header: "  -", path: "virtual_services[\(index)]", documents)
            }
        }
    }

    private mutating func append(_ line: String) {
        yaml += line + "\n"
        lineCount += 1
    }

    private mutating func add(_ key: ClusterKey, header: String, path: String, _ documents: [ClusterKey: String]) {
        append(header)
        let headerLine = lineCount
        let padding = String(repeating: " ", count: ConfigAssembler.indent)
        var lines = (documents[key] ?? "").split(separator: "\n", omittingEmptySubsequences: false)
        while let last = lines.last, last.allSatisfy(\.isWhitespace) { lines.removeLast() }
        for line in lines {
            append(padding + (line.hasSuffix("\r") ? line.dropLast() : line))
        }
        spans.append(
            Span(key: key, headerLine: headerLine, bodyLine: headerLine + 1, lastLine: lineCount, pathPrefix: path))
    }

    /// Traces a diagnostic of the assembled text to its document.
    func locate(_ diagnostic: ConfigDiagnostic) -> (ClusterKey?, DocumentProblem) {
        let span =
            spans.first { span in
                diagnostic.path == span.pathPrefix || diagnostic.path.hasPrefix(span.pathPrefix + ".")
                    || diagnostic.path.hasPrefix(span.pathPrefix + "[")
            }
            ?? diagnostic.line.flatMap { line in spans.first { $0.headerLine <= line && line <= $0.lastLine } }
        guard let span else {
            return (nil, DocumentProblem(key: "", path: diagnostic.path, message: diagnostic.message))
        }
        var path = diagnostic.path
        if path.hasPrefix(span.pathPrefix) {
            path.removeFirst(span.pathPrefix.count)
            if path.hasPrefix(".") { path.removeFirst() }
        }
        var line: Int?
        var column: Int?
        if let diagnosticLine = diagnostic.line, diagnosticLine >= span.bodyLine, diagnosticLine <= span.lastLine {
            line = diagnosticLine - span.bodyLine + 1
            column = diagnostic.column.map { max(1, $0 - ConfigAssembler.indent) }
        }
        return (
            span.key,
            DocumentProblem(
                key: span.key.relativePath, path: path, line: line, column: column, message: diagnostic.message)
        )
    }

    /// A YAML double-quoted scalar (JSON's escapes are a subset of YAML's).
    static func quoted(_ text: String) -> String { JSONString.quoted(text) }

    /// The same rule as FulcrumConfig's paths: names with a '.' are shown quoted.
    static func pathKey(_ name: String) -> String {
        name.contains(".") ? "\"" + name + "\"" : name
    }
}
