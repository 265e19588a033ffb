/// A quick scan of the raw text that refuses two kinds of document before Yams composes them:
///
/// - **Absurd nesting.** The composer recurses once per level; a config needs a handful of levels.
/// - **Complex keys** (`? …`, `[a, b]: …`, `*alias: …`). Yams hashes every mapping key to find
///   duplicates, and an alias of a nested anchor ("billion laughs") as a key makes that exponential.
///   No Fulcrum key is anything but a plain string, so nothing valid is lost.
///
/// It tracks quotes, comments and flow brackets only roughly, which is enough: it errs towards letting
/// a document through to the real parser, and only fails far from anything a real config contains.
enum Preflight {
    struct Finding: Equatable {
        var line: Int
        var column: Int
        var message: String
    }

    static func check(_ yaml: String, nestingLimit: Int) -> Finding? {
        let text = Array(yaml.unicodeScalars)
        var line = 1
        var column = 0
        var flowDepth = 0
        var blockIndicators = 0
        var atLineStart = true
        var inComment = false
        var quote: Unicode.Scalar?
        var previous: Unicode.Scalar = "\n"
        var index = 0

        func isBlank(_ scalar: Unicode.Scalar) -> Bool { scalar == " " || scalar == "\t" }
        func isAnchorCharacter(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar {
            case "0"..."9", "a"..."z", "A"..."Z", "_", "-": return true
            default: return false
            }
        }
        func isBreakOrEnd(_ at: Int) -> Bool { at >= text.count || text[at] == "\n" || text[at] == "\r" }
        /// A token may start here: after a blank, a line break or flow punctuation.
        func atTokenStart() -> Bool { isBlank(previous) || "\n[{,".unicodeScalars.contains(previous) }
        /// After position `at`, skipping blanks, is there a `:` that makes what precedes it a key?
        func keyIndicator(after at: Int) -> Int? {
            var next = at
            while next < text.count, isBlank(text[next]) { next += 1 }
            guard next < text.count, text[next] == ":" else { return nil }
            let after = next + 1
            if isBreakOrEnd(after) || isBlank(text[after])
                || (flowDepth > 0 && ",]}".unicodeScalars.contains(text[after]))
            {
                return next
            }
            return nil
        }
        let complexKey = "complex mapping keys (a list, a mapping or an alias used as a key) are not supported"

        while index < text.count {
            let scalar = text[index]
            column += 1
            defer {
                previous = scalar
                index += 1
            }
            if scalar == "\n" {
                line += 1
                column = 0
                atLineStart = true
                blockIndicators = 0
                inComment = false
                continue
            }
            if inComment { continue }
            if let open = quote {
                if open == "\"" && scalar == "\\" {
                    // Skip the escaped character (it cannot end the string).
                    if index + 1 < text.count, text[index + 1] != "\n" {
                        index += 1
                        column += 1
                    }
                } else if scalar == open {
                    if open == "'", index + 1 < text.count, text[index + 1] == "'" {
                        index += 1
                        column += 1
                    } else {
                        quote = nil
                    }
                }
                continue
            }
            if atLineStart {
                // Compact nested block collections (`- - - x`) nest one level per indicator.
                if isBlank(scalar) { continue }
                if scalar == "-" || scalar == "?" || scalar == ":", isBreakOrEnd(index + 1) || isBlank(text[index + 1])
                {
                    if scalar == "?" { return Finding(line: line, column: column, message: complexKey) }
                    blockIndicators += 1
                    if blockIndicators > nestingLimit {
                        return Finding(
                            line: line, column: column, message: "nesting is deeper than \(nestingLimit) levels")
                    }
                    continue
                }
                atLineStart = false
            }
            switch scalar {
            case "#" where isBlank(previous) || previous == "\n":
                inComment = true
            case "\"", "'":
                if atTokenStart() || previous == ":" { quote = scalar }
            case "?" where atTokenStart() && (isBreakOrEnd(index + 1) || isBlank(text[index + 1])):
                return Finding(line: line, column: column, message: complexKey)
            case "*" where atTokenStart():
                // libyaml's anchor names are [0-9A-Za-z_-]: in `*a: 1` the alias is `a`, then a key indicator.
                var end = index + 1
                while end < text.count, isAnchorCharacter(text[end]) { end += 1 }
                if end > index + 1, keyIndicator(after: end) != nil {
                    return Finding(line: line, column: column, message: complexKey)
                }
            case "[", "{":
                flowDepth += 1
                if flowDepth > nestingLimit {
                    return Finding(line: line, column: column, message: "nesting is deeper than \(nestingLimit) levels")
                }
            case "]", "}":
                flowDepth = max(0, flowDepth - 1)
                if keyIndicator(after: index + 1) != nil {
                    return Finding(line: line, column: column, message: complexKey)
                }
            default:
                break
            }
        }
        return nil
    }
}
