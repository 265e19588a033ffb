import FulcrumConfig

/// One stored version of a document: its text and the etcd revision that wrote it.
public struct StoredDocument: Sendable, Equatable {
    public var text: String
    /// The key's `mod_revision`: the compare-and-swap token for writing it (0: not stored, or from a file).
    public var modRevision: Int64

    public init(text: String, modRevision: Int64) {
        self.text = text
        self.modRevision = modRevision
    }
}

/// Decides what a node applies when documents change: every document that validates, and for a document
/// that does not, its last good version (or its absence, when it never had one). Pure: no IO.
///
/// Why per document: if one broken document froze the whole configuration, a typo in one pool would stop
/// scale-out of every other pool cluster-wide until someone fixed it.
public enum DocumentSet {
    /// The outcome of one evaluation.
    public struct Evaluation: Sendable, Equatable {
        /// The configuration to run; nil only when even the last good documents no longer validate.
        public var config: FulcrumConfig?
        /// The documents `config` was built from: the next evaluation's last good set.
        public var applied: [ClusterKey: StoredDocument]
        /// Documents of `current` that were not applied, with why, sorted by key.
        public var rejections: [DocumentRejection]
    }

    /// Evaluates `current` (what the store holds now) against `lastGood` (what was applied last time).
    public static func evaluate(
        local: FulcrumConfig, current: [ClusterKey: StoredDocument], lastGood: [ClusterKey: StoredDocument]
    ) -> Evaluation {
        let changed = Set(current.keys).union(lastGood.keys).filter { current[$0] != lastGood[$0] }
        var candidate = current
        var reverted: [ClusterKey: [DocumentProblem]] = [:]
        // Each round reverts at least one changed document, or gives up; so at most changed.count + 1 rounds.
        for _ in 0...changed.count {
            let failure: ConfigAssembler.Failure
            switch ConfigAssembler.assemble(local: local, documents: candidate.mapValues(\.text)) {
            case .success(let config):
                return Evaluation(
                    config: config, applied: candidate, rejections: rejections(reverted, current: current))
            case .failure(let found):
                failure = found
            }
            var progress = false
            for problem in failure.problems {
                guard let key = ClusterKey(relativePath: problem.key[...]), changed.contains(key) else { continue }
                if reverted[key] == nil {
                    candidate[key] = lastGood[key]
                    progress = true
                }
                reverted[key, default: []].append(problem)
            }
            if !progress {
                // The problems lie in documents that did not change (a listener whose pool was deleted) or
                // in no document: every remaining change is held back, each carrying those problems.
                for key in changed where reverted[key] == nil {
                    candidate[key] = lastGood[key]
                    reverted[key] = failure.problems.map { problem in
                        var shown = problem
                        if shown.key != key.relativePath {
                            shown.message =
                                "not applied, because then "
                                + (problem.key.isEmpty ? "" : problem.key + ": ")
                                + (problem.path.isEmpty ? "" : problem.path + ": ") + problem.message
                            shown.key = key.relativePath
                            shown.path = ""
                            shown.line = nil
                            shown.column = nil
                        }
                        return shown
                    }
                }
                break
            }
        }
        // Back to the last good set, which validated when it was applied.
        let config = try? ConfigAssembler.assemble(local: local, documents: lastGood.mapValues(\.text)).get()
        return Evaluation(config: config, applied: lastGood, rejections: rejections(reverted, current: current))
    }

    private static func rejections(
        _ reverted: [ClusterKey: [DocumentProblem]], current: [ClusterKey: StoredDocument]
    ) -> [DocumentRejection] {
        reverted.keys.sorted().map { key in
            DocumentRejection(
                key: key.relativePath, modRevision: current[key]?.modRevision ?? 0, problems: reverted[key] ?? [])
        }
    }
}
