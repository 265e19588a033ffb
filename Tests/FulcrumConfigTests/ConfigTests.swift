import FulcrumConfig
import FulcrumCore
import Testing

/// Loads a config that must be valid; a failure prints every diagnostic.
func loadValid(_ yaml: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> FulcrumConfig {
    do {
        return try ConfigLoader.load(yaml: yaml)
    } catch {
        Issue.record("unexpected diagnostics:\n\(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The diagnostics of a config that must be invalid, as the lines users see.
func diagnostics(_ yaml: String) -> [String] {
    do {
        _ = try ConfigLoader.load(yaml: yaml)
        return []
    } catch {
        return error.diagnostics.map(\.description)
    }
}

func endpoint(_ text: String) -> Endpoint {
    guard case .success(let endpoint) = Endpoint.parse(text, allowPortZero: true) else {
        fatalError("bad endpoint in test: \(text)")
    }
    return endpoint
}

func ip(_ text: String) -> IPAddress {
    guard let address = IPAddress(text) else { fatalError("bad address in test: \(text)") }
    return address
}

@Suite("Defaults")
struct DefaultsTests {
    @Test func minimalConfigGetsEveryDefault() throws {
        let config = try loadValid(
            """
            pools:
              web:
                backends: [10.0.0.1:80]
            listeners:
              - { name: www, bind: 127.0.0.1:8080, pool: web }
            """)
        #expect(config.admin == nil)
        #expect(config.ha == nil)
        #expect(config.cluster == nil)
        #expect(config.workers == nil)
        #expect(config.virtualServices.isEmpty)

        let pool = try #require(config.pool(named: "web"))
        #expect(pool.algorithm == .weightedRoundRobin)
        #expect(pool.hashKey == nil)
        #expect(pool.healthCheck == nil)
        #expect(pool.outlierDetection == nil)
        #expect(pool.slowStart == nil)
        #expect(pool.maglevTableSize == 65537)
        #expect(pool.boundedLoadFactor == 0.25)
        #expect(pool.backends == [BackendConfig(address: endpoint("10.0.0.1:80"), weight: 1, backup: false)])

        let listener = try #require(config.listeners.first)
        #expect(listener.mode == .http)
        #expect(listener.retries == 2)
        #expect(listener.proxyProtocol == .none)
        #expect(listener.stickyCookie == nil)
        #expect(listener.timeouts == ListenerTimeouts())
        #expect(listener.timeouts.connect == .seconds(5))
        #expect(listener.timeouts.idle == .seconds(60))
        #expect(listener.timeouts.requestHeaders == .seconds(10))
        #expect(listener.timeouts.response == .seconds(30))
        #expect(listener.timeouts.drain == .seconds(30))
    }

    @Test func sectionDefaults() throws {
        let config = try loadValid(
            """
            admin: {}
            pools:
              web:
                health_check: {}
                outlier_detection: {}
            cluster: {}
            virtual_services:
              - { vip: 192.0.2.1, port: 80, forwarding: tunnel, encapsulation: vxlan, interface: eth0, pool: web }
              - { vip: 192.0.2.1, port: 81, forwarding: nat, pool: web, snat: { address: 10.0.0.2 } }
            ha:
              vrrp: { interface: eth0, virtual_router_id: 7, vips: [192.0.2.1] }
            """)
        #expect(config.admin == AdminConfig(listen: endpoint("127.0.0.1:9900"), tokenFile: nil, stateFile: nil))
        let pool = try #require(config.pool(named: "web"))
        #expect(pool.backends.isEmpty)
        let check = try #require(pool.healthCheck)
        #expect(check == HealthCheckConfig())
        #expect(check.type == .tcp)
        #expect(check.path == "/")
        #expect(check.interval == .seconds(2))
        #expect(check.timeout == .seconds(1))
        #expect(check.rise == 2 && check.fall == 3)
        #expect(check.expectStatus == 200...399)
        #expect(check.jitter == 0.1)
        #expect(check.port == nil && check.host == nil && check.expectBody == nil)
        #expect(pool.outlierDetection == OutlierDetectionConfig())
        #expect(pool.outlierDetection?.consecutiveFailures == 5)
        #expect(pool.outlierDetection?.baseEjectionTime == .seconds(30))
        #expect(pool.outlierDetection?.maxEjectionTime == .seconds(300))
        #expect(pool.outlierDetection?.maxEjectionPercent == 50)
        #expect(config.cluster == ClusterConfig(store: .file, endpoints: [], prefix: "/fulcrum/", nodeName: nil))

        let tunnel = config.virtualServices[0]
        #expect(tunnel.protocol == .tcp)
        #expect(tunnel.vxlan == VXLANConfig(vni: 42, port: 4789))
        let nat = config.virtualServices[1]
        #expect(nat.snat == SNATConfig(address: ip("10.0.0.2"), ports: 20000...60000))
        #expect(nat.vxlan == nil && nat.interface == nil && nat.encapsulation == nil)

        let vrrp = try #require(config.ha?.vrrp)
        #expect(vrrp.priority == 100)
        #expect(vrrp.advertInterval == .seconds(1))
        #expect(vrrp.vips == [CIDR(address: ip("192.0.2.1"), prefixLength: 32)])
        #expect(vrrp.preempt)
        #expect(vrrp.preemptDelay == .zero)
        #expect(vrrp.unicastPeers.isEmpty)
        #expect(vrrp.trackWeight == 50)
        #expect(vrrp.notify == nil)
        #expect(config.ha?.mirror == nil)
    }

    @Test func nullValuesMeanAbsent() throws {
        let config = try loadValid(
            """
            pools:
              empty:
              web:
                backends:
                  # - 10.0.0.1:80
                health_check:
            listeners:
            """)
        #expect(config.pools.map(\.name) == ["empty", "web"])
        #expect(config.pools.allSatisfy { $0.backends.isEmpty && $0.healthCheck == nil })
        #expect(config.listeners.isEmpty)
    }

    @Test func shortIntervalBringsTheDefaultTimeoutDown() throws {
        let config = try loadValid("pools: { web: { health_check: { interval: 500ms } } }")
        #expect(config.pool(named: "web")?.healthCheck?.timeout == .milliseconds(500))
    }
}

@Suite("Every field decoded")
struct FieldTests {
    @Test func everyFieldOfEverySection() throws {
        let config = try loadValid(
            """
            version: 1
            workers: 8
            admin: { listen: 10.0.0.2:9901, token_file: admin.token, state_file: state.json }
            pools:
              web:
                algorithm: ring-hash
                hash_key: header:X-User
                health_check:
                  type: http
                  path: /healthz
                  host: example.org
                  interval: 3s
                  timeout: 250ms
                  rise: 4
                  fall: 5
                  expect_status: "200-299"
                  expect_body: ok
                  port: 8081
                  jitter: 0.5
                outlier_detection:
                  consecutive_failures: 7
                  base_ejection_time: 10s
                  max_ejection_time: 2m
                  max_ejection_percent: 30
                slow_start: 1m
                backends:
                  - { address: 10.0.0.11:8080, weight: 3 }
                  - 10.0.0.12:8080
                  - { address: "[2001:db8::1]:8080", backup: true, weight: 256 }
              mag:
                algorithm: maglev
                maglev_table_size: 251
                hash_key: flow
                backends: [10.0.0.31:80]
              bounded:
                algorithm: bounded-load
                bounded_load_factor: 1
                hash_key: cookie:SESSION
              src:
                algorithm: source-hash
                hash_key: source
              uri:
                algorithm: hash
                hash_key: uri
            listeners:
              - name: www
                bind: 0.0.0.0:80
                mode: http
                pool: web
                retries: 0
                timeouts: { connect: 2s, idle: 1m, request_headers: 5s, response: 10s, drain: 0s }
                sticky_cookie: { name: LB, insert: false }
              - { name: raw, bind: "[::1]:9000", mode: tcp, pool: web, proxy_protocol: v1, retries: 10 }
            virtual_services:
              - name: dsr
                vip: 192.0.2.10
                port: 80
                protocol: udp
                forwarding: dsr
                interface: eth0
                pool: mag
              - { vip: 192.0.2.10, port: 8080, forwarding: tunnel, encapsulation: vxlan, interface: eth1, pool: web, vxlan: { vni: 16777215, port: 8472 } }
              - { vip: 192.0.2.11, port: 8080, forwarding: tunnel, encapsulation: ipip, interface: eth1, pool: web }
              - { vip: 192.0.2.12, port: 443, forwarding: nat, pool: web, snat: { address: 10.0.0.2, ports: "1024-2048" } }
            ha:
              vrrp:
                interface: eth0
                virtual_router_id: 255
                priority: 255
                advert_interval: 40.95s
                vips: [192.0.2.10/24, 192.0.2.11]
                preempt: false
                preempt_delay: 30s
                unicast_peers: [10.0.0.3, 10.0.0.4]
                track_weight: 0
                notify: /bin/notify
              mirror: { listen: 10.0.0.2:7946, peers: [10.0.0.3:7946, "[2001:db8::3]:7946"], key_file: sync.key }
            cluster: { store: file, prefix: /lb/, node_name: lb-1 }
            x-anchors: anything goes here
            """)
        #expect(config.workers == 8)
        #expect(
            config.admin
                == AdminConfig(listen: endpoint("10.0.0.2:9901"), tokenFile: "admin.token", stateFile: "state.json"))
        #expect(config.pools.map(\.name) == ["web", "mag", "bounded", "src", "uri"])

        let web = try #require(config.pool(named: "web"))
        #expect(web.algorithm == .ringHash)
        #expect(web.hashKey == .header("X-User"))
        #expect(
            web.healthCheck
                == HealthCheckConfig(
                    type: .http, path: "/healthz", host: "example.org", interval: .seconds(3),
                    timeout: .milliseconds(250), rise: 4, fall: 5, expectStatus: 200...299, expectBody: "ok",
                    port: 8081, jitter: 0.5))
        #expect(
            web.outlierDetection
                == OutlierDetectionConfig(
                    consecutiveFailures: 7, baseEjectionTime: .seconds(10), maxEjectionTime: .seconds(120),
                    maxEjectionPercent: 30))
        #expect(web.slowStart == .seconds(60))
        #expect(
            web.backends == [
                BackendConfig(address: endpoint("10.0.0.11:8080"), weight: 3),
                BackendConfig(address: endpoint("10.0.0.12:8080")),
                BackendConfig(address: endpoint("[2001:db8::1]:8080"), weight: 256, backup: true),
            ])
        #expect(config.pool(named: "mag")?.maglevTableSize == 251)
        #expect(config.pool(named: "mag")?.hashKey == .flow)
        #expect(config.pool(named: "bounded")?.boundedLoadFactor == 1.0)
        #expect(config.pool(named: "bounded")?.hashKey == .cookie("SESSION"))
        #expect(config.pool(named: "src")?.hashKey == .source)
        #expect(config.pool(named: "uri")?.hashKey == .uri)
        #expect(config.pool(named: "missing") == nil)

        #expect(
            config.listeners == [
                ListenerConfig(
                    name: "www", bind: endpoint("0.0.0.0:80"), mode: .http, pool: "web", retries: 0,
                    proxyProtocol: .none,
                    timeouts: ListenerTimeouts(
                        connect: .seconds(2), idle: .seconds(60), requestHeaders: .seconds(5),
                        response: .seconds(10), drain: .zero),
                    stickyCookie: StickyCookieConfig(name: "LB", insert: false)),
                ListenerConfig(
                    name: "raw", bind: endpoint("[::1]:9000"), mode: .tcp, pool: "web", retries: 10,
                    proxyProtocol: .v1),
            ])

        #expect(
            config.virtualServices == [
                VirtualServiceConfig(
                    name: "dsr", vip: ip("192.0.2.10"), port: 80, protocol: .udp, forwarding: .dsr, interface: "eth0",
                    pool: "mag"),
                VirtualServiceConfig(
                    vip: ip("192.0.2.10"), port: 8080, forwarding: .tunnel, encapsulation: .vxlan, interface: "eth1",
                    pool: "web", vxlan: VXLANConfig(vni: 16_777_215, port: 8472)),
                VirtualServiceConfig(
                    vip: ip("192.0.2.11"), port: 8080, forwarding: .tunnel, encapsulation: .ipip, interface: "eth1",
                    pool: "web"),
                VirtualServiceConfig(
                    vip: ip("192.0.2.12"), port: 443, forwarding: .nat, pool: "web",
                    snat: SNATConfig(address: ip("10.0.0.2"), ports: 1024...2048)),
            ])

        #expect(
            config.ha?.vrrp
                == VRRPConfig(
                    interface: "eth0", virtualRouterId: 255, priority: 255, advertInterval: .milliseconds(40_950),
                    vips: [
                        CIDR(address: ip("192.0.2.10"), prefixLength: 24),
                        CIDR(address: ip("192.0.2.11"), prefixLength: 32),
                    ],
                    preempt: false, preemptDelay: .seconds(30), unicastPeers: [ip("10.0.0.3"), ip("10.0.0.4")],
                    trackWeight: 0, notify: "/bin/notify"))
        #expect(
            config.ha?.mirror
                == MirrorConfig(
                    listen: endpoint("10.0.0.2:7946"),
                    peers: [endpoint("10.0.0.3:7946"), endpoint("[2001:db8::3]:7946")],
                    keyFile: "sync.key"))
        #expect(
            config.cluster
                == ClusterConfig(store: .file, endpoints: [], prefix: "/lb/", nodeName: "lb-1"))
    }

    @Test func anEtcdClusterNodeFileHasNoSharedSections() throws {
        let config = try loadValid(
            "cluster: { store: etcd, endpoints: [http://10.0.0.50:2379], prefix: /lb/, node_name: lb-1 }")
        #expect(
            config.cluster
                == ClusterConfig(store: .etcd, endpoints: ["http://10.0.0.50:2379"], prefix: "/lb/", nodeName: "lb-1"))
        #expect(throws: ConfigErrors.self) {
            try ConfigLoader.load(
                yaml: "cluster: { store: etcd, endpoints: [http://127.0.0.1:2379] }\npools: { web: {} }\n")
        }
    }

    @Test func aBackendStateIsDecoded() throws {
        let config = try loadValid(
            "pools: { web: { backends: [{ address: 10.0.0.1:80, state: draining }, { address: 10.0.0.2:80, state: enabled }] } }"
        )
        #expect(config.pools.first?.backends.map(\.state) == [.draining, nil])
    }

    @Test func expectStatusAcceptsASingleCode() throws {
        let config = try loadValid("pools: { web: { health_check: { type: http, expect_status: 204 } } }")
        #expect(config.pool(named: "web")?.healthCheck?.expectStatus == 204...204)
    }

    @Test func anchorsAndMergeKeys() throws {
        let config = try loadValid(
            """
            x-check: &check { type: http, path: /healthz, interval: 5s }
            pools:
              a:
                health_check: *check
              b:
                health_check:
                  <<: *check
                  interval: 1s
            """)
        #expect(config.pool(named: "a")?.healthCheck?.interval == .seconds(5))
        #expect(config.pool(named: "b")?.healthCheck?.interval == .seconds(1))
        #expect(config.pool(named: "b")?.healthCheck?.path == "/healthz")
    }

    @Test func portZeroBindsAnEphemeralPort() throws {
        let config = try loadValid(
            """
            pools: { web: {} }
            listeners:
              - { name: a, bind: 127.0.0.1:0, pool: web }
              - { name: b, bind: 127.0.0.1:0, pool: web }
            """)
        #expect(config.listeners.map(\.bind.port) == [0, 0])
    }

    @Test(arguments: [
        ("source", HashKey.source), ("header:X-User", .header("X-User")), ("cookie:SESSION", .cookie("SESSION")),
        ("uri", .uri), ("flow", .flow),
    ])
    func hashKeysRoundTrip(text: String, key: HashKey) throws {
        #expect(try HashKey.parse(text).get() == key)
        #expect(key.description == text)
    }
}

@Suite("Diagnostics")
struct DiagnosticTests {
    @Test func descriptionFormat() {
        let diagnostic = ConfigDiagnostic(
            path: "pools.web.backends[2].weight", line: 14, column: 19, message: "must be ≥ 1")
        #expect(diagnostic.description == "pools.web.backends[2].weight: must be ≥ 1 (line 14, column 19)")
        #expect(ConfigDiagnostic(path: "", line: nil, column: nil, message: "x").description == "(root): x")
        let errors = ConfigErrors(diagnostics: [
            diagnostic, ConfigDiagnostic(path: "a", line: 1, column: 2, message: "b"),
        ])
        #expect(
            errors.description
                == "pools.web.backends[2].weight: must be ≥ 1 (line 14, column 19)\na: b (line 1, column 2)")
    }

    @Test func positionsAreOneBasedAndPointAtTheValue() {
        let lines = diagnostics(
            """
            pools:
              web:
                backends:
                  - { address: 10.0.0.1:80, weight: 0 }
            """)
        #expect(lines == ["pools.web.backends[0].weight: must be ≥ 1 (line 4, column 41)"])
    }

    @Test func everyProblemIsReportedInDocumentOrder() {
        let lines = diagnostics(
            """
            listeners:
              - { name: www, bind: 127.0.0.1:80, pool: nope }
            pools:
              web:
                algorithm: fastest
                backends: [10.0.0.1]
            """)
        #expect(lines.count == 3)
        #expect(lines.first?.hasPrefix("listeners[0].pool:") == true)
        #expect(lines.last?.hasPrefix("pools.web.backends[0]:") == true)
    }

    @Test func errorsAreNeverEmpty() {
        for yaml in ["", "   ", "# only a comment", "~", "{}", "[]", "42", "\"text\"", ":", "- a", "!!binary x"] {
            #expect(!diagnostics(yaml).isEmpty, "\(yaml.debugDescription) should not be a valid config")
        }
    }

    @Test func hugeAndNegativeNumbers() {
        #expect(
            diagnostics("workers: 99999999999999999999999999") == ["workers: must be ≤ 1024 (line 1, column 10)"])
        #expect(diagnostics("workers: -99999999999999999999999") == ["workers: must be ≥ 1 (line 1, column 10)"])
        #expect(diagnostics("workers: -3") == ["workers: must be ≥ 1 (line 1, column 10)"])
        #expect(diagnostics("workers: 1.5") == ["workers: expected an integer, found '1.5' (line 1, column 10)"])
        #expect(diagnostics("workers: 1:30") == ["workers: expected an integer, found '1:30' (line 1, column 10)"])
    }

    @Test func deepNestingIsRefusedNotCrashedOn() {
        let deep = "pools: " + String(repeating: "[", count: 100_000)
        #expect(diagnostics(deep) == ["(root): nesting is deeper than 64 levels (line 1, column 72)"])
        let compact = "pools:\n" + String(repeating: "- ", count: 50_000) + "x"
        #expect(diagnostics(compact).first?.contains("nesting is deeper than 64 levels") == true)
    }
}

@Suite("Preflight")
struct PreflightTests {
    /// Nested anchors used as a key would make Yams' duplicate-key check exponential ("billion laughs").
    @Test func aliasOfNestedAnchorsAsAKeyIsRefusedQuickly() {
        var yaml = "x-0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        for level in 1..<12 {
            yaml +=
                "x-\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
                + "]\n"
        }
        for key in ["*a11 : 1", "*a11: 1", "{ *a11 : 1 }", "[*a11, 1]: 1", "? *a11\n: 1"] {
            let lines = diagnostics(yaml + key + "\npools: {}\n")
            #expect(lines.count == 1)
            #expect(lines.first?.contains("complex mapping keys") == true, "\(key): \(lines)")
        }
    }

    /// Large expansions that are not keys are walked only as deep as the schema goes.
    @Test func aliasesOfNestedAnchorsAsValuesAreCheap() {
        var yaml = "x-0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        for level in 1..<12 {
            yaml +=
                "x-\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
                + "]\n"
        }
        yaml += "pools: { web: { backends: *a11 } }\nlisteners: *a11\nvirtual_services: *a11\n"
        #expect(diagnostics(yaml).count == 30)
    }

    @Test(arguments: [
        "pools: { web: { backends: [\"[::1]:80\"] } }",
        "pools:\n  web:\n    health_check: { type: http, expect_body: \"a]: b\", host: 'x]: {y' }\n",
        "x-a: &k web\npools:\n  web: { backends: [10.0.0.1:80] }\nlisteners: [{ name: n, bind: \"[::1]:80\", pool: *k }]",
        "pools: { web: {} } # ? [a]: b  *x: y\n",
        "pools: { web: { health_check: { type: http, expect_body: \"it's: [ok]: {}\" } } }",
    ])
    func ordinaryDocumentsPass(yaml: String) {
        #expect(diagnostics(yaml).isEmpty)
    }
}

@Suite("Text encodings")
struct EncodingTests {
    @Test func windowsLineEndingsAndByteOrderMark() throws {
        let yaml = "\u{FEFF}pools:\r\n  web:\r\n    backends: [10.0.0.1:80]\r\n"
        let config = try loadValid(yaml)
        #expect(config.pool(named: "web")?.backends.count == 1)
        #expect(
            diagnostics("pools:\r\n  web:\r\n    backends:\r\n      - { address: 10.0.0.1:80, weight: 0 }\r\n")
                == ["pools.web.backends[0].weight: must be ≥ 1 (line 4, column 41)"])
    }
}
