import FulcrumCore
import Yams

/// Reads the known keys of one mapping. Unknown keys were already reported when it was made
/// (`DecodingContext.mapping(_:at:keys:)`). A key whose value is null (`key:` alone) counts as absent.
struct MappingReader {
    let node: Node
    let path: YAMLPath
    let entries: [MappingEntry]
    let context: DecodingContext

    func entry(_ key: String) -> MappingEntry? {
        entries.first { $0.key == key }
    }

    /// The value of `key`, nil when absent or null.
    func value(_ key: String) -> Node? {
        guard let value = entry(key)?.value, !value.isNullScalar else { return nil }
        return value
    }

    /// Whether `key` is written (even with a null value).
    func has(_ key: String) -> Bool {
        entry(key) != nil
    }

    /// The value of a key that must be there; reports `required key is missing` at this mapping otherwise.
    func required(_ key: String) -> Node? {
        guard let entry = entry(key) else {
            context.report(path.key(key), node.mark, "required key is missing")
            return nil
        }
        return entry.value
    }

    /// Reports a key that is valid in general but not with these other settings.
    func reject(_ key: String, _ message: String) {
        guard let entry = entry(key) else { return }
        context.report(path.key(key), at: entry.keyNode, message)
    }

    // MARK: Typed shortcuts (optional keys return the default when absent or invalid)

    func string(_ key: String) -> String? {
        value(key).flatMap { context.string($0, at: path.key(key)) }
    }

    func requiredString(_ key: String) -> String? {
        required(key).flatMap { context.string($0, at: path.key(key)) }
    }

    func int(_ key: String, in range: ClosedRange<Int>) -> Int? {
        value(key).flatMap { context.int($0, at: path.key(key), in: range) }
    }

    func int(_ key: String, in range: ClosedRange<Int>, default defaultValue: Int) -> Int {
        int(key, in: range) ?? defaultValue
    }

    func requiredInt(_ key: String, in range: ClosedRange<Int>) -> Int? {
        required(key).flatMap { context.int($0, at: path.key(key), in: range) }
    }

    func double(
        _ key: String, in range: ClosedRange<Double>, above: Bool = false, default defaultValue: Double
    )
        -> Double
    {
        value(key).flatMap { context.double($0, at: path.key(key), in: range, above: above) } ?? defaultValue
    }

    func bool(_ key: String, default defaultValue: Bool) -> Bool {
        value(key).flatMap { context.bool($0, at: path.key(key)) } ?? defaultValue
    }

    func duration(
        _ key: String, default defaultValue: Duration, minimum: Duration = .zero, maximum: Duration? = nil,
        positive: Bool = false
    ) -> Duration {
        optionalDuration(key, minimum: minimum, maximum: maximum, positive: positive) ?? defaultValue
    }

    func optionalDuration(
        _ key: String, minimum: Duration = .zero, maximum: Duration? = nil, positive: Bool = false
    )
        -> Duration?
    {
        value(key).flatMap {
            context.duration($0, at: path.key(key), minimum: minimum, maximum: maximum, positive: positive)
        }
    }

    func choice<Value: RawRepresentable & CaseIterable>(_ key: String, noun: String) -> Value?
    where Value.RawValue == String {
        value(key).flatMap { context.choice($0, at: path.key(key), noun: noun) }
    }

    func requiredChoice<Value: RawRepresentable & CaseIterable>(_ key: String, noun: String) -> Value?
    where Value.RawValue == String {
        required(key).flatMap { context.choice($0, at: path.key(key), noun: noun) }
    }

    func endpoint(_ key: String, allowPortZero: Bool = false) -> Endpoint? {
        value(key).flatMap { context.endpoint($0, at: path.key(key), allowPortZero: allowPortZero) }
    }

    func requiredEndpoint(_ key: String, allowPortZero: Bool = false) -> Endpoint? {
        required(key).flatMap { context.endpoint($0, at: path.key(key), allowPortZero: allowPortZero) }
    }

    func port(_ key: String) -> UInt16? {
        int(key, in: 1...65535).map { UInt16($0) }
    }

    /// A list value; nil when absent, null or not a list (reported).
    func list(_ key: String) -> [Node]? {
        value(key).flatMap { context.list($0, at: path.key(key)) }
    }

    /// A nested mapping with a fixed set of keys; nil when absent, null or not a mapping (reported).
    func mapping(_ key: String, keys: [String]) -> MappingReader? {
        value(key).flatMap { context.mapping($0, at: path.key(key), keys: keys) }
    }
}
