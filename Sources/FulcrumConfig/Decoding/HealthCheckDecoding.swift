import Yams

extension HealthCheckConfig {
    static let keys = [
        "type", "path", "host", "interval", "timeout", "rise", "fall", "expect_status", "expect_body", "port",
        "jitter",
    ]
    static let httpOnlyKeys = ["path", "host", "expect_status", "expect_body"]

    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> HealthCheckConfig? {
        guard let map = context.mapping(node, at: path, keys: keys) else { return nil }
        var check = HealthCheckConfig()
        let type: CheckType? = map.value("type") == nil ? .tcp : map.choice("type", noun: "health check type")
        check.type = type ?? .tcp
        if type == .tcp {
            for key in httpOnlyKeys { map.reject(key, "only valid with type http") }
        }
        if let pathNode = map.value("path"), let value = context.string(pathNode, at: path.key("path")) {
            if !value.hasPrefix("/") {
                context.report(path.key("path"), at: pathNode, "must start with '/'")
            } else if value.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
                context.report(path.key("path"), at: pathNode, "must not contain spaces or control characters")
            } else {
                check.path = value
            }
        }
        check.host = map.string("host")
        check.interval = map.duration("interval", default: .seconds(2), minimum: .milliseconds(10))
        if let timeoutNode = map.value("timeout"),
            let timeout = context.duration(timeoutNode, at: path.key("timeout"), positive: true)
        {
            if timeout > check.interval {
                context.report(
                    path.key("timeout"), at: timeoutNode, "must be ≤ the interval (\(formatDuration(check.interval)))")
            } else {
                check.timeout = timeout
            }
        } else if map.value("timeout") == nil {
            // A short interval brings the default timeout down with it rather than failing validation.
            check.timeout = min(check.timeout, check.interval)
        }
        check.rise = map.int("rise", in: 1...100, default: 2)
        check.fall = map.int("fall", in: 1...100, default: 3)
        if let statusNode = map.value("expect_status") {
            check.expectStatus =
                statusRange(statusNode, at: path.key("expect_status"), context: context)
                ?? check.expectStatus
        }
        check.expectBody = map.string("expect_body")
        check.port = map.port("port")
        check.jitter = map.double("jitter", in: 0...0.5, default: 0.1)
        return check
    }

    /// `200` or `"200-399"`, within 100...599.
    private static func statusRange(_ node: Node, at path: YAMLPath, context: DecodingContext) -> ClosedRange<Int>? {
        let usage = "expected a status code or a range such as 200-399"
        guard case .scalar(let scalar) = node else {
            context.report(path, at: node, "\(usage), found \(node.foundDescription)")
            return nil
        }
        let parts = scalar.string.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else {
            context.report(path, at: node, "\(usage), found \(node.foundDescription)")
            return nil
        }
        var bounds: [Int] = []
        for part in parts {
            guard case .value(let code) = parseInteger(String(part)), !part.contains("+") else {
                context.report(path, at: node, "\(usage), found \(node.foundDescription)")
                return nil
            }
            guard (100...599).contains(code) else {
                context.report(path, at: node, "status codes must be within 100-599")
                return nil
            }
            bounds.append(code)
        }
        guard let low = bounds.first, let high = bounds.last, low <= high else {
            context.report(path, at: node, "the range must be written low-high, e.g. 200-399")
            return nil
        }
        return low...high
    }
}

extension OutlierDetectionConfig {
    static let keys = ["consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent"]

    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> OutlierDetectionConfig? {
        guard let map = context.mapping(node, at: path, keys: keys) else { return nil }
        var detection = OutlierDetectionConfig()
        detection.consecutiveFailures = map.int("consecutive_failures", in: 1...1_000_000, default: 5)
        detection.baseEjectionTime = map.duration("base_ejection_time", default: .seconds(30), positive: true)
        if let maxNode = map.value("max_ejection_time"),
            let maximum = context.duration(maxNode, at: path.key("max_ejection_time"), positive: true)
        {
            if maximum < detection.baseEjectionTime {
                context.report(
                    path.key("max_ejection_time"), at: maxNode,
                    "must be ≥ base_ejection_time (\(formatDuration(detection.baseEjectionTime)))")
            } else {
                detection.maxEjectionTime = maximum
            }
        } else if map.value("max_ejection_time") == nil, detection.maxEjectionTime < detection.baseEjectionTime {
            detection.maxEjectionTime = detection.baseEjectionTime
        }
        detection.maxEjectionPercent = map.int("max_ejection_percent", in: 0...100, default: 50)
        return detection
    }
}
