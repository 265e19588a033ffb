/// A problem with one shared document: the key it was read from, where in the document, and what is wrong.
///
/// `description` reads like the file loader's diagnostics, prefixed with the key:
/// `pools/web: backends[0].weight: must be ≥ 1 (line 3, column 15)`.
public struct DocumentProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The key below the prefix (`pools/web`), or `""` for a problem of the document set as a whole.
    public var key: String
    /// The path inside the document (`backends[0].weight`); `""` for the document itself.
    public var path: String
    /// 1-based line inside the document, when known.
    public var line: Int?
    /// 1-based column inside the document, when known.
    public var column: Int?
    public var message: String

    public init(key: String, path: String = "", line: Int? = nil, column: Int? = nil, message: String) {
        self.key = key
        self.path = path
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        var text = key.isEmpty ? "(documents)" : key
        if !path.isEmpty { text += ": " + path }
        text += ": " + message
        switch (line, column) {
        case (let line?, let column?): text += " (line \(line), column \(column))"
        case (let line?, nil): text += " (line \(line))"
        default: break
        }
        return text
    }
}

/// A document the store read but did not apply, with every problem found in it.
public struct DocumentRejection: Sendable, Equatable, CustomStringConvertible {
    /// The key below the prefix.
    public var key: String
    /// The etcd revision at which the rejected version was written.
    public var modRevision: Int64
    public var problems: [DocumentProblem]

    public init(key: String, modRevision: Int64, problems: [DocumentProblem]) {
        self.key = key
        self.modRevision = modRevision
        self.problems = problems
    }

    public var description: String {
        problems.map(\.description).joined(separator: "\n")
    }
}
