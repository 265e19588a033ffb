import FulcrumCore
import Yams

/// Collects diagnostics while the decoder walks the YAML tree, so that one pass reports every problem.
///
/// Each reader reports its own failure and returns nil; callers then carry on with a default so the rest
/// of the document is still checked. Confined to one `ConfigLoader.load(yaml:)` call.
final class DecodingContext {
    private(set) var diagnostics: [ConfigDiagnostic] = []

    func report(_ path: YAMLPath, _ mark: Mark?, _ message: String) {
        report(path, line: mark?.line, column: mark?.column, message)
    }

    func report(_ path: YAMLPath, line: Int?, column: Int?, _ message: String) {
        diagnostics.append(ConfigDiagnostic(path: path.description, line: line, column: column, message: message))
    }

    func report(_ path: YAMLPath, at node: Node, _ message: String) {
        report(path, node.mark, message)
    }

    // MARK: Structure

    /// The entries of a mapping in document order, with `<<` merge keys expanded (explicit keys win).
    /// Reports and skips keys that are not scalars. Nil (after reporting) when `node` is not a mapping.
    func entries(of node: Node, at path: YAMLPath) -> [MappingEntry]? {
        guard case .mapping(let mapping) = node else {
            report(path, at: node, "expected a mapping, found \(node.foundDescription)")
            return nil
        }
        var explicit: [MappingEntry] = []
        var merged: [MappingEntry] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                report(path, at: keyNode, "mapping keys must be strings, found \(keyNode.foundDescription)")
                continue
            }
            if keyScalar.string == "<<" && keyScalar.style != .singleQuoted && keyScalar.style != .doubleQuoted {
                merged += mergeSources(value, at: path)
                continue
            }
            explicit.append(MappingEntry(key: keyScalar.string, keyNode: keyNode, value: value))
        }
        let explicitKeys = Set(explicit.map(\.key))
        var seen = explicitKeys
        for entry in merged where !seen.contains(entry.key) {
            seen.insert(entry.key)
            explicit.append(entry)
        }
        return explicit
    }

    /// `<<: *defaults` or `<<: [*a, *b]`: earlier sources win, as in YAML 1.1 merge.
    private func mergeSources(_ value: Node, at path: YAMLPath) -> [MappingEntry] {
        switch value {
        case .mapping:
            return entries(of: value, at: path) ?? []
        case .sequence(let sequence):
            var all: [MappingEntry] = []
            for item in sequence {
                guard case .mapping = item else {
                    report(path, at: item, "'<<' merges mappings, found \(item.foundDescription)")
                    continue
                }
                all += entries(of: item, at: path) ?? []
            }
            return all
        default:
            report(path, at: value, "'<<' merges mappings, found \(value.foundDescription)")
            return []
        }
    }

    /// A mapping with a fixed set of keys. Unknown keys are reported with a suggestion; keys starting with
    /// `x-` are skipped when `allowExtensions` (the root allows them to hold YAML anchors).
    func mapping(
        _ node: Node, at path: YAMLPath, keys: [String], allowExtensions: Bool = false
    ) -> MappingReader? {
        guard let entries = entries(of: node, at: path) else { return nil }
        var known: [MappingEntry] = []
        for entry in entries {
            if keys.contains(entry.key) {
                known.append(entry)
            } else if allowExtensions && entry.key.hasPrefix("x-") {
                continue
            } else {
                let key = entry.key.shortenedForMessage
                let message: String
                if let match = Suggestion.closest(to: entry.key, in: keys) {
                    message = "unknown key '\(key)'; did you mean '\(match)'?"
                } else {
                    message = "unknown key '\(key)' (allowed: \(keys.joined(separator: ", ")))"
                }
                report(path.key(key), at: entry.keyNode, message)
            }
        }
        return MappingReader(node: node, path: path, entries: known, context: self)
    }

    /// The items of a list, or nil (after reporting) when `node` is not a list.
    func list(_ node: Node, at path: YAMLPath) -> [Node]? {
        guard case .sequence(let sequence) = node else {
            report(path, at: node, "expected a list, found \(node.foundDescription)")
            return nil
        }
        return Array(sequence)
    }

    // MARK: Scalars

    func string(_ node: Node, at path: YAMLPath, allowEmpty: Bool = false) -> String? {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            report(path, at: node, "expected a string, found \(node.foundDescription)")
            return nil
        }
        if !allowEmpty && scalar.string.isEmpty {
            report(path, at: node, "must not be empty")
            return nil
        }
        return scalar.string
    }

    /// A whole number within `range`. Out-of-range values (including ones too large for `Int`) are
    /// reported as `must be ≥ lo` or `must be ≤ hi`.
    func int(_ node: Node, at path: YAMLPath, in range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            report(path, at: node, "expected an integer, found \(node.foundDescription)")
            return nil
        }
        switch parseInteger(scalar.string) {
        case .invalid:
            report(path, at: node, "expected an integer, found \(node.foundDescription)")
            return nil
        case .tooLarge:
            report(path, at: node, "must be ≤ \(range.upperBound)")
            return nil
        case .tooSmall:
            report(path, at: node, "must be ≥ \(range.lowerBound)")
            return nil
        case .value(let value):
            if value < range.lowerBound {
                report(path, at: node, "must be ≥ \(range.lowerBound)")
                return nil
            }
            if value > range.upperBound {
                report(path, at: node, "must be ≤ \(range.upperBound)")
                return nil
            }
            return value
        }
    }

    /// A decimal number within `range` (integers are accepted: `1` is `1.0`).
    func double(
        _ node: Node, at path: YAMLPath, in range: ClosedRange<Double>, above lowerExclusive: Bool = false
    )
        -> Double?
    {
        guard case .scalar(let scalar) = node, !node.isNullScalar, let value = parseDecimal(scalar.string) else {
            report(path, at: node, "expected a number, found \(node.foundDescription)")
            return nil
        }
        if lowerExclusive && value <= range.lowerBound {
            report(path, at: node, "must be > \(range.lowerBound.formattedForMessage)")
            return nil
        }
        if value < range.lowerBound {
            report(path, at: node, "must be ≥ \(range.lowerBound.formattedForMessage)")
            return nil
        }
        if value > range.upperBound {
            report(path, at: node, "must be ≤ \(range.upperBound.formattedForMessage)")
            return nil
        }
        return value
    }

    func bool(_ node: Node, at path: YAMLPath) -> Bool? {
        if case .scalar(let scalar) = node {
            switch scalar.string {
            case "true", "True", "TRUE": return true
            case "false", "False", "FALSE": return false
            default: break
            }
        }
        report(path, at: node, "expected true or false, found \(node.foundDescription)")
        return nil
    }

    /// A duration (`250ms`, `2s`), at least `minimum` and at most `maximum`.
    func duration(
        _ node: Node, at path: YAMLPath, minimum: Duration = .zero, maximum: Duration? = nil,
        positive: Bool = false
    ) -> Duration? {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            report(path, at: node, "expected a duration such as 2s, found \(node.foundDescription)")
            return nil
        }
        let text = scalar.string.trimmingSpaces
        guard let value = parseDuration(text) else {
            if parseDecimal(text) != nil {
                report(path, at: node, "'\(text.shortenedForMessage)' has no unit; add a unit, e.g. 2s")
            } else {
                report(
                    path, at: node,
                    "'\(text.shortenedForMessage)' is not a duration (expected e.g. 500us, 250ms, 2s, 1.5s, 1m, 1h)")
            }
            return nil
        }
        if positive && value <= .zero {
            report(path, at: node, "must be > 0s")
            return nil
        }
        if value < minimum {
            report(path, at: node, "must be ≥ \(formatDuration(minimum))")
            return nil
        }
        if let maximum, value > maximum {
            report(path, at: node, "must be ≤ \(formatDuration(maximum))")
            return nil
        }
        return value
    }

    /// One of an enum's raw values, with a suggestion when it is close to one.
    func choice<Value: RawRepresentable & CaseIterable>(
        _ node: Node, at path: YAMLPath, noun: String
    ) -> Value? where Value.RawValue == String {
        let names = Value.allCases.map(\.rawValue)
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            report(path, at: node, "expected one of \(names.joined(separator: ", ")), found \(node.foundDescription)")
            return nil
        }
        if let value = Value(rawValue: scalar.string) { return value }
        report(
            path, at: node,
            "unknown \(noun) '\(scalar.string.shortenedForMessage)'" + Suggestion.hint(for: scalar.string, in: names))
        return nil
    }

    /// `host:port` with an IP address (names are not resolved here).
    func endpoint(_ node: Node, at path: YAMLPath, allowPortZero: Bool = false) -> Endpoint? {
        guard let text = string(node, at: path) else { return nil }
        let trimmed = text.trimmingSpaces
        switch Endpoint.parse(trimmed, allowPortZero: allowPortZero) {
        case .success(let endpoint):
            return endpoint
        case .failure(let error):
            report(path, at: node, Self.endpointMessage(trimmed, error))
            return nil
        }
    }

    private static func endpointMessage(_ text: String, _ error: Endpoint.ParseError) -> String {
        let shown = text.shortenedForMessage
        if !text.hasPrefix("["), text.filter({ $0 == ":" }).count >= 2 {
            return "'\(shown)': write IPv6 endpoints in brackets, e.g. [2001:db8::1]:80"
        }
        if case .missingPort = error {
            return "'\(shown)' has no port (expected address:port, e.g. 10.0.0.1:80)"
        }
        if case .invalidPort(let port) = error {
            return "invalid port '\(port.shortenedForMessage)' in '\(shown)' (expected 1-65535)"
        }
        if case .invalidAddress(let address) = error {
            return "'\(address.shortenedForMessage)' is not an IP address (host names are not resolved; "
                + "use an IPv4 address or [IPv6])"
        }
        return "'\(shown)' is not an endpoint: \(error)"
    }

    func ipAddress(_ node: Node, at path: YAMLPath) -> IPAddress? {
        guard let text = string(node, at: path) else { return nil }
        guard let address = IPAddress(text.trimmingSpaces) else {
            report(path, at: node, "'\(text.shortenedForMessage)' is not an IP address")
            return nil
        }
        return address
    }

    /// An IPv4 address; `what` names the feature in the "not supported yet" message.
    func ipv4Address(_ node: Node, at path: YAMLPath, v6Message: String) -> IPAddress? {
        guard let address = ipAddress(node, at: path) else { return nil }
        guard address.isIPv4 else {
            report(path, at: node, v6Message)
            return nil
        }
        return address
    }
}

/// One `key: value` of a mapping, with the key's node for its position.
struct MappingEntry {
    var key: String
    var keyNode: Node
    var value: Node
}

// MARK: - Scalar text

enum IntegerParse: Equatable {
    case value(Int)
    case tooLarge
    case tooSmall
    case invalid
}

/// Decimal integers with an optional sign and `_` between digits (`1_000_003`). Not YAML 1.1's octal,
/// hex or base 60: `1:30` is not ninety.
func parseInteger(_ text: String) -> IntegerParse {
    var scalars = Substring(text.trimmingSpaces).unicodeScalars[...]
    var negative = false
    if let first = scalars.first, first == "+" || first == "-" {
        negative = first == "-"
        scalars = scalars.dropFirst()
    }
    guard let first = scalars.first, first >= "0" && first <= "9", let last = scalars.last, last != "_" else {
        return .invalid
    }
    var value = 0
    var overflowed = false
    for scalar in scalars {
        if scalar == "_" { continue }
        guard scalar >= "0" && scalar <= "9" else { return .invalid }
        let digit = Int(scalar.value - 48)
        let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
        let (added, o2) =
            negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
        if o1 || o2 { overflowed = true } else { value = added }
    }
    if overflowed { return negative ? .tooSmall : .tooLarge }
    return .value(value)
}

/// `[+-]digits[.digits]` — no `nan`, `inf`, hex floats or exponents.
func parseDecimal(_ text: String) -> Double? {
    let trimmed = text.trimmingSpaces
    var sawDigit = false
    var sawDot = false
    for (offset, scalar) in trimmed.unicodeScalars.enumerated() {
        switch scalar {
        case "0"..."9": sawDigit = true
        case "." where !sawDot: sawDot = true
        case "+" where offset == 0, "-" where offset == 0: continue
        default: return nil
        }
    }
    guard sawDigit, let value = Double(trimmed), value.isFinite else { return nil }
    return value
}

extension String {
    var trimmingSpaces: String {
        var scalars = Substring(self).unicodeScalars[...]
        while let first = scalars.first, first == " " || first == "\t" { scalars = scalars.dropFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars = scalars.dropLast() }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Keeps messages one readable line however long or multi-line the offending text is.
    var shortenedForMessage: String {
        let oneLine = String(unicodeScalars.map { $0 == "\n" || $0 == "\r" || $0 == "\t" ? " " : Character($0) })
        if oneLine.count <= 48 { return oneLine }
        return String(oneLine.prefix(45)) + "…"
    }
}

extension Double {
    var formattedForMessage: String {
        if self == rounded(), abs(self) < 1e15 { return String(Int(self)) }
        return String(self)
    }
}

extension Node {
    /// Plain `~`, `null`, `Null`, `NULL` or nothing at all, as in `key:` with no value.
    var isNullScalar: Bool {
        guard case .scalar(let scalar) = self else { return false }
        if scalar.style == .singleQuoted || scalar.style == .doubleQuoted || scalar.style == .literal
            || scalar.style == .folded
        {
            return false
        }
        switch scalar.string {
        case "", "~", "null", "Null", "NULL": return true
        default: return false
        }
    }

    /// What a type error says was found instead: `a list`, `a mapping`, `nothing`, `'text'`.
    var foundDescription: String {
        switch self {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let scalar):
            if isNullScalar { return "nothing" }
            return "'\(scalar.string.shortenedForMessage)'"
        }
    }
}
