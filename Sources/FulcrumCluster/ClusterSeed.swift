/// `fulcrum cluster seed`: writes a config file's pools, listeners and virtual services into an empty
/// prefix, one document per key (``ClusterDocuments/split(configText:)``), so a cluster can start from a
/// file that already runs on one node.
public enum ClusterSeed {
    /// Why the prefix was not seeded.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case documents(ClusterDocuments.Failure)
        /// The prefix already holds configuration: seeding would mix two configurations.
        case notEmpty(prefix: String, keys: [String])
        case etcd(String)

        public var description: String {
            switch self {
            case .documents(let failure): failure.description
            case .notEmpty(let prefix, let keys):
                "\(prefix) already holds configuration (\(keys.prefix(5).joined(separator: ", "))"
                    + "\(keys.count > 5 ? ", …" : "")); seed only an empty prefix, or edit it through the admin API"
            case .etcd(let detail): detail
            }
        }
    }

    /// Writes every document of `configText` under `prefix`, each only if absent (a concurrent seeder
    /// cannot be overwritten). Returns the keys written, in layout order.
    public static func seed(
        configText: String, client: EtcdClient, prefix: String
    ) async throws(Failure) -> [ClusterKey] {
        let documents: [ClusterKey: String]
        do {
            documents = try ClusterDocuments.split(configText: configText)
        } catch {
            throw .documents(error)
        }
        do {
            let (_, existing) = try await client.range(prefix: prefix)
            let configuration = existing.map { String($0.key.dropFirst(prefix.count)) }
                .filter { ClusterKey(relativePath: $0[...])?.isConfiguration ?? true }
            guard configuration.isEmpty else { throw Failure.notEmpty(prefix: prefix, keys: configuration.sorted()) }
            for key in documents.keys.sorted() {
                try await client.put(
                    key.key(under: prefix), value: Array((documents[key] ?? "").utf8), ifModRevision: 0)
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .etcd("\(error)")
        }
        return documents.keys.sorted()
    }
}
