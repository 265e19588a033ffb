import Foundation

/// The JSON shapes of etcd's v3 gateway that the client reads. The gateway writes 64-bit integers as
/// strings and leaves out fields at their default (false, 0, empty), so every field is optional and
/// integers are read from either form.
enum EtcdJSON {
    struct Header: Decodable {
        var revision: Int64?

        enum CodingKeys: String, CodingKey { case revision }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            revision = try container.int64(.revision)
        }
    }

    struct KeyValue: Decodable {
        var key: String
        var value: String?
        var createRevision: Int64?
        var modRevision: Int64?
        var lease: Int64?

        enum CodingKeys: String, CodingKey {
            case key, value, lease
            case createRevision = "create_revision"
            case modRevision = "mod_revision"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            key = try container.decodeIfPresent(String.self, forKey: .key) ?? ""
            value = try container.decodeIfPresent(String.self, forKey: .value)
            createRevision = try container.int64(.createRevision)
            modRevision = try container.int64(.modRevision)
            lease = try container.int64(.lease)
        }
    }

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct ResponseOp: Decodable {
        var responseRange: RangeResponse?

        enum CodingKeys: String, CodingKey { case responseRange = "response_range" }
    }

    struct LeaseGrantResponse: Decodable {
        var id: Int64?
        var ttl: Int64?

        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            id = try container.int64(.id)
            ttl = try container.int64(.ttl)
        }
    }

    /// One message of a streamed call: `{"result": …}` or `{"error": …}`.
    struct StreamEnvelope<Result: Decodable>: Decodable {
        var result: Result?
        var error: GatewayError?
    }

    struct GatewayError: Decodable {
        var message: String?
        var code: Int?
        var httpStatus: Int?

        enum CodingKeys: String, CodingKey {
            case message, code
            case httpStatus = "http_code"
        }
    }

    struct WatchResponse: Decodable {
        var header: Header?
        var created: Bool?
        var canceled: Bool?
        var compactRevision: Int64?
        var cancelReason: String?
        var events: [Event]?

        enum CodingKeys: String, CodingKey {
            case header, created, canceled, events
            case compactRevision = "compact_revision"
            case cancelReason = "cancel_reason"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            header = try container.decodeIfPresent(Header.self, forKey: .header)
            created = try container.decodeIfPresent(Bool.self, forKey: .created)
            canceled = try container.decodeIfPresent(Bool.self, forKey: .canceled)
            compactRevision = try container.int64(.compactRevision)
            cancelReason = try container.decodeIfPresent(String.self, forKey: .cancelReason)
            events = try container.decodeIfPresent([Event].self, forKey: .events)
        }
    }

    struct Event: Decodable {
        /// Absent for PUT (the enum's zero value).
        var type: String?
        var kv: KeyValue?
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            let text = String(decoding: bytes.prefix(200), as: UTF8.self)
            throw EtcdError.malformedResponse("\(what): \(error) in '\(text)'")
        }
    }

    /// The error an HTTP status other than 200 stands for, with etcd's message when the body has one.
    static func serverError(status: Int, body: [UInt8]) -> EtcdError {
        struct Body: Decodable {
            var message: String?
            var error: String?
            var code: Int?
        }
        let parsed = try? JSONDecoder().decode(Body.self, from: Data(body))
        let message = parsed?.message ?? parsed?.error ?? String(decoding: body.prefix(200), as: UTF8.self)
        return .server(status: status, code: parsed?.code, message: message)
    }

    /// A request body from JSON-compatible values (`String`, `Int64`, `Bool`, arrays and dictionaries).
    static func body(_ object: [String: Any]) -> [UInt8] {
        // Only our own literals reach this; they are always valid JSON objects.
        (try? Array(JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))) ?? Array("{}".utf8)
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func bytes(base64 text: String?) throws -> [UInt8] {
        guard let text else { return [] }
        guard let data = Data(base64Encoded: text) else {
            throw EtcdError.malformedResponse("invalid base64 '\(text.prefix(40))'")
        }
        return Array(data)
    }
}

extension KeyedDecodingContainer {
    /// An int64 written as a JSON string (the gateway's form) or as a number.
    fileprivate func int64(_ key: Key) throws -> Int64? {
        if let text = try? decodeIfPresent(String.self, forKey: key) {
            guard let value = Int64(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not an integer")
            }
            return value
        }
        return try decodeIfPresent(Int64.self, forKey: key)
    }
}
