import FulcrumCore

/// One backend of a pool: `- { address: 10.0.0.11:8080, weight: 3 }` or just `- 10.0.0.11:8080`.
public struct BackendConfig: Sendable, Equatable {
    public var address: Endpoint
    /// Relative share of traffic, 1...256 (default 1).
    public var weight: Int
    /// A backup only receives traffic when no primary backend of the pool is up.
    public var backup: Bool
    /// `draining` or `disabled` set in the config (a cluster's shared drain lives here); nil means enabled,
    /// unless the admin API changed it on this node.
    public var state: AdminState?

    public static let weightRange = 1...256

    public init(address: Endpoint, weight: Int = 1, backup: Bool = false, state: AdminState? = nil) {
        self.address = address
        self.weight = weight
        self.backup = backup
        self.state = state
    }
}
