/// Every problem found in a configuration, in document order. `ConfigLoader.load(yaml:)` throws this
/// only with at least one diagnostic.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]

    public init(diagnostics: [ConfigDiagnostic]) {
        self.diagnostics = diagnostics
    }

    /// One diagnostic per line.
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}
