import FulcrumCore

/// The admin HTTP API, metrics and dashboard (`admin:`).
public struct AdminConfig: Sendable, Equatable {
    /// Default `127.0.0.1:9900`. A non-loopback address requires `tokenFile`.
    public var listen: Endpoint
    /// Path of a file holding the bearer token required by mutating calls.
    public var tokenFile: String?
    /// Where run-time changes (scale-out, drains) are saved so they survive a restart.
    public var stateFile: String?

    public static let defaultListen = Endpoint(address: .v4(0x7F00_0001), port: 9900)

    public init(listen: Endpoint = AdminConfig.defaultListen, tokenFile: String? = nil, stateFile: String? = nil) {
        self.listen = listen
        self.tokenFile = tokenFile
        self.stateFile = stateFile
    }
}
