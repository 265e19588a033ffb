/// What a hashing algorithm hashes (`hash_key:`): `source`, `header:X-User`, `cookie:SESSION`, `uri`, `flow`.
public enum HashKey: Sendable, Hashable, CustomStringConvertible {
    /// The client IP address.
    case source
    /// The value of a request header (HTTP listeners).
    case header(String)
    /// The value of a request cookie (HTTP listeners).
    case cookie(String)
    /// The request URI, path and query (HTTP listeners).
    case uri
    /// The 5-tuple (packet plane).
    case flow

    /// The config spelling, which `parse(_:)` reads back.
    public var description: String {
        switch self {
        case .source: return "source"
        case .header(let name): return "header:\(name)"
        case .cookie(let name): return "cookie:\(name)"
        case .uri: return "uri"
        case .flow: return "flow"
        }
    }

    /// The forms accepted in the config, for messages.
    static let forms = ["source", "header:NAME", "cookie:NAME", "uri", "flow"]

    /// Parses the config spelling; the failure is a message for the user.
    public static func parse(_ text: String) -> Result<HashKey, HashKeyError> {
        switch text {
        case "source": return .success(.source)
        case "uri": return .success(.uri)
        case "flow": return .success(.flow)
        default: break
        }
        if let colon = text.firstIndex(of: ":") {
            let kind = text[..<colon]
            let name = String(text[text.index(after: colon)...])
            switch kind {
            case "header", "cookie":
                guard !name.isEmpty else {
                    return .failure(HashKeyError("'\(kind):' needs a name, e.g. \(kind):X-User"))
                }
                guard name.unicodeScalars.allSatisfy(isTokenCharacter) else {
                    return .failure(HashKeyError("'\(name)' is not a valid \(kind) name"))
                }
                return .success(kind == "header" ? .header(name) : .cookie(name))
            default:
                break
            }
        }
        let bare = text.split(separator: ":", maxSplits: 1).first.map(String.init) ?? text
        let suggestion = Suggestion.closest(to: bare, in: ["source", "header", "cookie", "uri", "flow"])
        let hint =
            suggestion.map {
                ["header", "cookie"].contains($0) ? "; did you mean '\($0):NAME'?" : "; did you mean '\($0)'?"
            }
            ?? " (expected one of: \(forms.joined(separator: ", ")))"
        return .failure(HashKeyError("unknown hash key '\(text)'" + hint))
    }
}

/// Why a `hash_key` is not valid.
public struct HashKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// RFC 9110 `tchar`: what header field and cookie names are made of.
func isTokenCharacter(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar {
    case "a"..."z", "A"..."Z", "0"..."9": return true
    case "!", "#", "$", "%", "&", "'", "*", "+", "-", ".", "^", "_", "`", "|", "~": return true
    default: return false
    }
}
