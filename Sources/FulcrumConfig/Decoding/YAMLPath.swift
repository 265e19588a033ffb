/// A path into the document as users read it: `pools.web.backends[2].weight`.
struct YAMLPath: Sendable, CustomStringConvertible {
    private(set) var description: String

    static let root = YAMLPath(description: "")

    /// Keys that are not plain words (empty, with spaces or dots) are quoted: `pools."web.v2".backends`.
    func key(_ key: String) -> YAMLPath {
        let plain =
            !key.isEmpty
            && key.unicodeScalars.allSatisfy {
                switch $0 {
                case "a"..."z", "A"..."Z", "0"..."9", "_", "-": return true
                default: return false
                }
            }
        let shown = plain ? key : "\"" + key.shortenedForMessage.replacingQuotes + "\""
        return YAMLPath(description: description.isEmpty ? shown : description + "." + shown)
    }

    func index(_ index: Int) -> YAMLPath {
        YAMLPath(description: description + "[\(index)]")
    }
}

extension String {
    fileprivate var replacingQuotes: String {
        String(unicodeScalars.map { $0 == "\"" ? "'" : Character($0) })
    }
}
