/// One problem found in a configuration, with where it is: the YAML path of the offending value
/// (`pools.web.backends[2].weight`, array indices 0-based) and its 1-based line and column.
///
/// `description` is what users see: `pools.web.backends[2].weight: must be ≥ 1 (line 14, column 19)`.
public struct ConfigDiagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    /// The YAML path, or `""` for a problem with the document as a whole (shown as `(root)`).
    public var path: String
    /// 1-based line, when known.
    public var line: Int?
    /// 1-based column (counted in Unicode scalars), when known.
    public var column: Int?
    /// What is wrong, and when possible how to fix it.
    public var message: String

    public init(path: String, line: Int?, column: Int?, message: String) {
        self.path = path
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        let shownPath = path.isEmpty ? "(root)" : path
        switch (line, column) {
        case (let line?, let column?): return "\(shownPath): \(message) (line \(line), column \(column))"
        case (let line?, nil): return "\(shownPath): \(message) (line \(line))"
        default: return "\(shownPath): \(message)"
        }
    }
}
