import FulcrumCore

/// One admin change to a pool document in etcd, as a compare-and-swap: read the document and its
/// `mod_revision`, edit it (``ClusterDocuments/edit(poolDocument:_:)``), write it only if nobody wrote
/// it meanwhile. A lost race re-reads and edits the newer version, at most `maxAttempts` times, so two
/// operators changing one pool at once both get their change and neither overwrites the other.
public struct SharedPoolEditor: Sendable {
    public let store: EtcdConfigStore
    public let maxAttempts: Int

    /// Why a change was not written.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case unknownPool(String)
        case unknownBackend(pool: String, Endpoint)
        case duplicateBackend(pool: String, Endpoint)
        /// The document cannot be edited, or the result would not validate.
        case rejected(String)
        /// Every attempt lost its compare-and-swap.
        case conflict(pool: String, attempts: Int)
        /// etcd could not be reached or answered with an error; nothing was written (as far as we know).
        case unavailable(String)

        public var description: String {
            switch self {
            case .unknownPool(let pool): "no pool '\(pool)' in the shared configuration"
            case .unknownBackend(let pool, let endpoint): "no backend \(endpoint) in pool '\(pool)'"
            case .duplicateBackend(let pool, let endpoint): "backend \(endpoint) is already in pool '\(pool)'"
            case .rejected(let detail): detail
            case .conflict(let pool, let attempts):
                "pool '\(pool)' changed under \(attempts) attempts in a row; try again"
            case .unavailable(let detail): detail
            }
        }
    }

    public init(store: EtcdConfigStore, maxAttempts: Int = 8) {
        self.store = store
        self.maxAttempts = max(1, maxAttempts)
    }

    /// Writes `change` into `pools/<pool>`. Returns the store revision of the write (wait for the watch to
    /// reach it to see the change applied) and how many attempts lost a race first. `beforeWrite(attempt)`
    /// runs between the read and the write (tests use it to race a second writer).
    public func apply(
        _ change: ClusterDocuments.BackendChange, to pool: String,
        beforeWrite: @Sendable (Int) async -> Void = { _ in }
    ) async throws(Failure) -> (revision: Int64, conflicts: Int) {
        var conflicts = 0
        for attempt in 1...maxAttempts {
            let document: StoredDocument?
            do {
                document = try await store.document(.pool(pool))
            } catch {
                throw .unavailable("\(error)")
            }
            guard let document else { throw .unknownPool(pool) }
            let text: String
            do {
                text = try ClusterDocuments.edit(poolDocument: document.text, change)
            } catch {
                switch error {
                case .unknownBackend(let endpoint): throw .unknownBackend(pool: pool, endpoint)
                case .duplicateBackend(let endpoint): throw .duplicateBackend(pool: pool, endpoint)
                default: throw .rejected(error.description)
                }
            }
            await beforeWrite(attempt)
            do {
                let revision = try await store.put(.pool(pool), text: text, ifModRevision: document.modRevision)
                return (revision, conflicts)
            } catch EtcdError.conflict {
                conflicts += 1
                // A short random pause, growing with the attempt, so racing writers do not collide again in step.
                if attempt < maxAttempts { try? await Task.sleep(for: .milliseconds(Int.random(in: 1...5) * attempt)) }
            } catch let error as ClusterWriteError {
                throw .rejected(error.description)
            } catch {
                throw .unavailable("\(error)")
            }
        }
        throw .conflict(pool: pool, attempts: maxAttempts)
    }
}
