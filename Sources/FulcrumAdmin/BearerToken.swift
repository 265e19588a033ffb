/// The secret that write calls must present as `Authorization: Bearer <token>`.
struct BearerToken: Sendable {
    private let bytes: [UInt8]

    init(_ token: String) {
        bytes = Array(token.utf8)
    }

    /// Whether an `Authorization` header carries this token. The comparison looks at every byte whatever
    /// differs first, so the time taken does not tell an attacker how much of a guess was right (only
    /// whether its length was).
    func accepts(authorizationHeader header: String?) -> Bool {
        guard let header else { return false }
        let trimmed = header.drop { $0 == " " }
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return false }
        let presented = Array(trimmed.dropFirst(7).drop { $0 == " " }.utf8)
        return Self.constantTimeEquals(presented, bytes)
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
