/// One request as the API sees it: the HTTP layer has already collected the body.
public struct AdminRequest: Sendable {
    /// `GET`, `POST`, `PATCH`, `DELETE`...
    public var method: String
    /// The request target: path and optional query, still percent-encoded.
    public var target: String
    /// The `Authorization` header, if any.
    public var authorization: String?
    public var body: [UInt8]

    public init(method: String, target: String, authorization: String? = nil, body: [UInt8] = []) {
        self.method = method
        self.target = target
        self.authorization = authorization
        self.body = body
    }
}

/// The API's answer: a status and a JSON body, or (for `/metrics` and `/ui`) text of another type.
public struct AdminResponse: Sendable, Equatable {
    public var status: Int
    public var body: JSONValue
    /// When set, sent instead of `body`, with `contentType`.
    public var text: String?
    public var contentType: String

    public init(status: Int, body: JSONValue) {
        self.status = status
        self.body = body
        self.text = nil
        self.contentType = "application/json"
    }

    /// A non-JSON answer (Prometheus exposition, the dashboard page).
    public init(status: Int, text: String, contentType: String) {
        self.status = status
        self.body = .null
        self.text = text
        self.contentType = contentType
    }

    /// `{"error": error, "detail": detail}` with `status`.
    public static func error(_ status: Int, _ error: String, _ detail: String) -> AdminResponse {
        AdminResponse(status: status, body: .object([("error", .string(error)), ("detail", .string(detail))]))
    }

    static func badRequest(_ detail: String) -> AdminResponse { .error(400, "bad_request", detail) }
    static func notFound(_ detail: String) -> AdminResponse { .error(404, "not_found", detail) }
    static func unprocessable(_ detail: String) -> AdminResponse { .error(422, "invalid_value", detail) }
}

/// Why a request was refused before it reached the control plane; becomes an error response.
struct AdminRefusal: Error {
    let response: AdminResponse

    static func badRequest(_ detail: String) -> AdminRefusal { AdminRefusal(response: .badRequest(detail)) }
    static func unprocessable(_ detail: String) -> AdminRefusal { AdminRefusal(response: .unprocessable(detail)) }
}
