import NIOCore

/// One key of etcd with its revisions.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// The revision that created the key (0 for a deleted key in a watch event).
    public var createRevision: Int64
    /// The revision of the last write: the compare-and-swap token.
    public var modRevision: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], createRevision: Int64, modRevision: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.lease = lease
    }

    /// The value as UTF-8 text, nil when it is not valid UTF-8.
    public var text: String? { String(validating: value, as: UTF8.self) }
}

/// One change seen by a watch.
public struct EtcdEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case put
        case delete
    }

    public var kind: Kind
    public var keyValue: EtcdKeyValue
}

/// The events etcd sent in one watch message, and the store revision it was sent at.
public struct EtcdWatchBatch: Sendable, Equatable {
    public var revision: Int64
    public var events: [EtcdEvent]
}

/// The etcd v3 calls Fulcrum needs, over etcd's JSON/HTTP gateway (`/v3/...`, etcd ≥ 3.4; keys and values
/// are base64 in the JSON). Keys are UTF-8 strings. Every unary call is bounded by `requestTimeout`.
public final class EtcdClient: Sendable {
    let transport: EtcdHTTPTransport
    public let requestTimeout: Duration

    public init(
        endpoints: [EtcdEndpoint], group: any EventLoopGroup, requestTimeout: Duration = .seconds(3),
        connectTimeout: Duration = .seconds(2)
    ) {
        self.transport = EtcdHTTPTransport(group: group, endpoints: endpoints, connectTimeout: connectTimeout)
        self.requestTimeout = requestTimeout
    }

    /// Every key starting with `prefix`, with the store revision the read was taken at.
    public func range(prefix: String) async throws -> (revision: Int64, keyValues: [EtcdKeyValue]) {
        let response = try await call(
            "/v3/kv/range",
            ["key": EtcdJSON.base64(prefix), "range_end": EtcdJSON.base64(Self.prefixEnd(prefix))],
            as: EtcdJSON.RangeResponse.self)
        return (response.header?.revision ?? 0, try (response.kvs ?? []).map(Self.keyValue))
    }

    /// One key, with the store revision the read was taken at.
    public func get(_ key: String) async throws -> (revision: Int64, keyValue: EtcdKeyValue?) {
        let response = try await call(
            "/v3/kv/range", ["key": EtcdJSON.base64(key)], as: EtcdJSON.RangeResponse.self)
        return (response.header?.revision ?? 0, try response.kvs?.first.map(Self.keyValue))
    }

    /// Writes `key` unconditionally; returns the new store revision.
    @discardableResult
    public func put(_ key: String, value: [UInt8], lease: Int64 = 0) async throws -> Int64 {
        var body: [String: Any] = ["key": EtcdJSON.base64(key), "value": EtcdJSON.base64(value)]
        if lease != 0 { body["lease"] = String(lease) }
        let response = try await call("/v3/kv/put", body, as: EtcdJSON.RangeResponse.self)
        return response.header?.revision ?? 0
    }

    /// Writes `key` only if its `mod_revision` is still `expected` (0: only if the key does not exist), in
    /// one transaction. Returns the new store revision, or throws ``EtcdError/conflict(key:expected:actual:)``.
    @discardableResult
    public func put(
        _ key: String, value: [UInt8], ifModRevision expected: Int64, lease: Int64 = 0
    ) async throws -> Int64 {
        var put: [String: Any] = ["key": EtcdJSON.base64(key), "value": EtcdJSON.base64(value)]
        if lease != 0 { put["lease"] = String(lease) }
        return try await transaction(key, expected: expected, success: ["request_put": put])
    }

    /// Deletes `key` if its `mod_revision` is still `expected`; throws a conflict otherwise.
    @discardableResult
    public func delete(_ key: String, ifModRevision expected: Int64) async throws -> Int64 {
        try await transaction(key, expected: expected, success: ["request_delete_range": ["key": EtcdJSON.base64(key)]])
    }

    /// Deletes `key` (absent is fine); returns the new store revision.
    @discardableResult
    public func delete(_ key: String) async throws -> Int64 {
        let response = try await call(
            "/v3/kv/deleterange", ["key": EtcdJSON.base64(key)], as: EtcdJSON.RangeResponse.self)
        return response.header?.revision ?? 0
    }

    private func transaction(_ key: String, expected: Int64, success: [String: Any]) async throws -> Int64 {
        // create_revision == 0 is etcd's way to say "the key does not exist".
        let compare: [String: Any] =
            expected == 0
            ? ["target": "CREATE", "key": EtcdJSON.base64(key), "create_revision": "0", "result": "EQUAL"]
            : ["target": "MOD", "key": EtcdJSON.base64(key), "mod_revision": String(expected), "result": "EQUAL"]
        let body: [String: Any] = [
            "compare": [compare], "success": [success],
            "failure": [["request_range": ["key": EtcdJSON.base64(key)]]],
        ]
        let response = try await call("/v3/kv/txn", body, as: EtcdJSON.TxnResponse.self)
        if response.succeeded == true { return response.header?.revision ?? 0 }
        let actual = response.responses?.first?.responseRange?.kvs?.first?.modRevision ?? 0
        throw EtcdError.conflict(key: key, expected: expected, actual: actual)
    }

    /// Drops the history before `revision` (watches from older revisions then fail as compacted).
    public func compact(revision: Int64) async throws {
        _ = try await call(
            "/v3/kv/compaction", ["revision": String(revision), "physical": true], as: EtcdJSON.RangeResponse.self)
    }

    /// A new lease of `ttl` seconds; returns its id and the TTL etcd granted (etcd may raise a short one).
    public func grantLease(ttl: Int64) async throws -> (id: Int64, ttl: Int64) {
        let response = try await call("/v3/lease/grant", ["TTL": String(ttl)], as: EtcdJSON.LeaseGrantResponse.self)
        guard let id = response.id, id != 0 else { throw EtcdError.malformedResponse("lease grant without an ID") }
        return (id, response.ttl ?? ttl)
    }

    /// Renews `lease` once; returns its remaining TTL, 0 when etcd no longer knows it (it expired).
    public func keepAlive(lease: Int64) async throws -> Int64 {
        // A bidirectional stream in gRPC; over the gateway one request body gives one answer, then the end.
        let (status, body) = try await transport.post(
            "/v3/lease/keepalive", body: EtcdJSON.body(["ID": String(lease)]), timeout: requestTimeout)
        guard status == 200 else { throw EtcdJSON.serverError(status: status, body: body) }
        let first = Array(body.split(separator: UInt8(ascii: "\n")).first ?? [])
        let envelope = try EtcdJSON.decode(
            EtcdJSON.StreamEnvelope<EtcdJSON.LeaseGrantResponse>.self, from: first, what: "lease keepalive")
        if let error = envelope.error {
            throw EtcdError.server(status: error.httpStatus ?? status, code: error.code, message: error.message ?? "")
        }
        return envelope.result?.ttl ?? 0
    }

    /// Ends `lease` now; its keys are deleted. An unknown lease is not an error.
    public func revoke(lease: Int64) async throws {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": String(lease)], as: EtcdJSON.RangeResponse.self)
        } catch EtcdError.server(_, let code, _) where code == 5 {
            return  // NOT_FOUND: already expired
        }
    }

    /// Watches every key under `prefix` from `revision` on, handing each message's events to `onBatch`.
    /// `onOpen` runs when etcd confirmed the watch. Returns only when cancelled; throws
    /// ``EtcdError/compacted(compactRevision:)`` when `revision` is no longer in etcd's history, and
    /// ``EtcdError/unreachable(_:)`` when the stream ends.
    public func watch(
        prefix: String, fromRevision revision: Int64, onOpen: @Sendable () -> Void = {},
        onBatch: (EtcdWatchBatch) async throws -> Void
    ) async throws {
        let body = EtcdJSON.body([
            "create_request": [
                "key": EtcdJSON.base64(prefix), "range_end": EtcdJSON.base64(Self.prefixEnd(prefix)),
                "start_revision": String(revision),
            ] as [String: Any]
        ])
        try await transport.stream("/v3/watch", body: body) { message in
            let envelope = try EtcdJSON.decode(
                EtcdJSON.StreamEnvelope<EtcdJSON.WatchResponse>.self, from: message, what: "watch")
            if let error = envelope.error {
                throw EtcdError.server(status: error.httpStatus ?? 200, code: error.code, message: error.message ?? "")
            }
            guard let result = envelope.result else { return }
            if result.canceled == true {
                if let compacted = result.compactRevision, compacted > 0 {
                    throw EtcdError.compacted(compactRevision: compacted)
                }
                throw EtcdError.watchCanceled(result.cancelReason ?? "no reason given")
            }
            if result.created == true { onOpen() }
            let events = try (result.events ?? []).compactMap { event -> EtcdEvent? in
                guard let kv = event.kv else { return nil }
                return EtcdEvent(kind: event.type == "DELETE" ? .delete : .put, keyValue: try Self.keyValue(kv))
            }
            if !events.isEmpty {
                let revision = result.header?.revision ?? events.map(\.keyValue.modRevision).max() ?? 0
                try await onBatch(EtcdWatchBatch(revision: revision, events: events))
            }
        }
        if Task.isCancelled { return }
        throw EtcdError.unreachable("the watch stream ended")
    }

    /// The smallest key greater than every key starting with `prefix` (etcd's `range_end` for a prefix).
    static func prefixEnd(_ prefix: String) -> [UInt8] {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return [0]  // every key
    }

    private static func keyValue(_ kv: EtcdJSON.KeyValue) throws -> EtcdKeyValue {
        let keyBytes = try EtcdJSON.bytes(base64: kv.key)
        return EtcdKeyValue(
            key: String(decoding: keyBytes, as: UTF8.self), value: try EtcdJSON.bytes(base64: kv.value),
            createRevision: kv.createRevision ?? 0, modRevision: kv.modRevision ?? 0, lease: kv.lease ?? 0)
    }

    private func call<T: Decodable>(_ path: String, _ body: [String: Any], as type: T.Type) async throws -> T {
        let (status, response) = try await transport.post(path, body: EtcdJSON.body(body), timeout: requestTimeout)
        guard status == 200 else { throw EtcdJSON.serverError(status: status, body: response) }
        return try EtcdJSON.decode(type, from: response, what: path)
    }
}
