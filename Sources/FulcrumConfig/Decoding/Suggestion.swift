/// "Did you mean …?" for misspelt keys and enum values.
enum Suggestion {
    /// The candidate the user most likely meant: one that differs only in case, `_` or `-`, else the
    /// closest within an edit distance of 2 (1 for words of three letters or fewer). Nil if none is close.
    static func closest(to input: String, in candidates: [String]) -> String? {
        guard !input.isEmpty, input.count <= 64 else { return nil }
        let normalizedInput = normalize(input)
        if let variant = candidates.first(where: { normalize($0) == normalizedInput }) {
            return variant
        }
        let limit = input.count <= 3 ? 1 : 2
        var best: (candidate: String, distance: Int)?
        let lowered = Array(input.lowercased().unicodeScalars)
        for candidate in candidates {
            let distance = editDistance(lowered, Array(candidate.lowercased().unicodeScalars))
            if distance <= limit, distance < candidate.count, distance < (best?.distance ?? .max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Case, `_` and `-` do not count: `hashKey`, `hash-key` and `HASH_KEY` all mean `hash_key`.
    static func normalize(_ text: String) -> String {
        String(text.lowercased().unicodeScalars.filter { $0 != "_" && $0 != "-" })
    }

    /// Optimal string alignment distance: Levenshtein plus adjacent transpositions (`weigth`).
    static func editDistance(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    value = min(value, previousPrevious[j - 2] + 1)
                }
                current[j] = value
            }
            (previousPrevious, previous, current) = (previous, current, previousPrevious)
        }
        return previous[b.count]
    }

    /// `; did you mean 'x'?` or, when nothing is close, ` (expected one of: a, b, c)`.
    static func hint(for input: String, in candidates: [String]) -> String {
        if let match = closest(to: input, in: candidates) {
            return "; did you mean '\(match)'?"
        }
        return " (expected one of: \(candidates.joined(separator: ", ")))"
    }
}
