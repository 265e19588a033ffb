import Yams

extension AccessLogConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> AccessLogConfig? {
        guard let map = context.mapping(node, at: path, keys: ["path", "format", "buffer_lines"]) else { return nil }
        let file = map.requiredString("path")
        let format: Format = map.choice("format", noun: "access log format") ?? .json
        let buffer = map.int("buffer_lines", in: 16...16_777_216, default: AccessLogConfig.defaultBufferLines)
        guard let file else { return nil }
        return AccessLogConfig(path: file, format: format, bufferLines: buffer)
    }
}
