import FulcrumCore
import Yams

/// Names and addresses already taken, so duplicates are reported where the second one is written.
struct UniquenessTracker<Key: Hashable> {
    private var firstPaths: [Key: String] = [:]

    /// Records `key` and returns nil, or returns the path where it was first used.
    mutating func claim(_ key: Key, at path: YAMLPath) -> String? {
        if let first = firstPaths[key] { return first }
        firstPaths[key] = path.description
        return nil
    }
}

/// The pools a reference may name, and the message when it names none of them.
struct PoolCatalog {
    var names: [String]
    var pools: [String: PoolConfig]

    func check(_ node: Node, at path: YAMLPath, context: DecodingContext) -> String? {
        guard let name = context.string(node, at: path) else { return nil }
        if names.contains(name) { return name }
        let hint: String
        if names.isEmpty {
            hint = " (no pools are defined)"
        } else if let match = Suggestion.closest(to: name, in: names) {
            hint = "; did you mean '\(match)'?"
        } else {
            hint = " (defined pools: \(names.joined(separator: ", ")))"
        }
        context.report(path, at: node, "unknown pool '\(name.shortenedForMessage)'" + hint)
        return nil
    }
}

extension ListenerConfig {
    static let keys = ["name", "bind", "mode", "pool", "retries", "proxy_protocol", "timeouts", "sticky_cookie"]

    static func decodeAll(
        _ items: [Node], at path: YAMLPath, pools: PoolCatalog, adminListen: Endpoint?, context: DecodingContext
    ) -> [ListenerConfig] {
        var listeners: [ListenerConfig] = []
        var names = UniquenessTracker<String>()
        var binds = UniquenessTracker<Endpoint>()
        for (index, item) in items.enumerated() {
            let itemPath = path.index(index)
            guard let map = context.mapping(item, at: itemPath, keys: keys) else { continue }
            let name = map.requiredString("name")
            if let name, let nameNode = map.value("name") {
                if !PoolConfig.isValidName(name) {
                    context.report(
                        itemPath.key("name"), at: nameNode,
                        "invalid name '\(name.shortenedForMessage)' (use letters, digits, '_', '.', '-')")
                } else if let first = names.claim(name, at: itemPath) {
                    context.report(
                        itemPath.key("name"), at: nameNode, "duplicate listener name '\(name)' (also \(first))")
                }
            }
            let bind = map.requiredEndpoint("bind", allowPortZero: true)
            if let bind, bind.port != 0, let bindNode = map.value("bind") {
                if let first = binds.claim(bind, at: itemPath) {
                    context.report(itemPath.key("bind"), at: bindNode, "duplicate bind address \(bind) (also \(first))")
                } else if bind == adminListen {
                    context.report(itemPath.key("bind"), at: bindNode, "\(bind) is already the admin listen address")
                }
            }
            let mode: Mode? = map.value("mode") == nil ? .http : map.choice("mode", noun: "mode")
            let pool = map.required("pool").flatMap { pools.check($0, at: itemPath.key("pool"), context: context) }
            let retries = map.int("retries", in: 0...10, default: 2)

            var proxyProtocol = ProxyProtocol.none
            if let value: ProxyProtocol = map.choice("proxy_protocol", noun: "PROXY protocol version") {
                if mode == .http && value != .none, let node = map.value("proxy_protocol") {
                    context.report(itemPath.key("proxy_protocol"), at: node, "only valid with mode tcp")
                } else {
                    proxyProtocol = value
                }
            }

            var timeouts = ListenerTimeouts()
            if let node = map.value("timeouts") {
                timeouts = ListenerTimeouts.decode(node, at: itemPath.key("timeouts"), mode: mode, context: context)
            }

            var stickyCookie: StickyCookieConfig?
            if mode == .tcp {
                map.reject("sticky_cookie", "only valid with mode http")
            } else if let cookie = map.mapping("sticky_cookie", keys: ["name", "insert"]) {
                let insert = cookie.bool("insert", default: true)
                if let cookieName = cookie.requiredString("name"), let nameNode = cookie.value("name") {
                    if cookieName.unicodeScalars.allSatisfy(isTokenCharacter) {
                        stickyCookie = StickyCookieConfig(name: cookieName, insert: insert)
                    } else {
                        context.report(
                            cookie.path.key("name"), at: nameNode,
                            "'\(cookieName.shortenedForMessage)' is not a valid cookie name")
                    }
                }
            }

            guard let name, let bind, let mode, let pool else { continue }
            listeners.append(
                ListenerConfig(
                    name: name, bind: bind, mode: mode, pool: pool, retries: retries, proxyProtocol: proxyProtocol,
                    timeouts: timeouts, stickyCookie: stickyCookie))
        }
        return listeners
    }
}

extension ListenerTimeouts {
    static func decode(
        _ node: Node, at path: YAMLPath, mode: ListenerConfig.Mode?, context: DecodingContext
    )
        -> ListenerTimeouts
    {
        var timeouts = ListenerTimeouts()
        let keys = ["connect", "idle", "request_headers", "response", "drain"]
        guard let map = context.mapping(node, at: path, keys: keys) else { return timeouts }
        let day = Duration.seconds(86_400)
        timeouts.connect = map.duration("connect", default: timeouts.connect, maximum: day, positive: true)
        timeouts.idle = map.duration("idle", default: timeouts.idle, maximum: day, positive: true)
        if mode == .tcp {
            map.reject("request_headers", "only used by mode http")
            map.reject("response", "only used by mode http")
        } else {
            timeouts.requestHeaders = map.duration(
                "request_headers", default: timeouts.requestHeaders, maximum: day, positive: true)
            timeouts.response = map.duration("response", default: timeouts.response, maximum: day, positive: true)
        }
        timeouts.drain = map.duration("drain", default: timeouts.drain, maximum: day)
        return timeouts
    }
}
