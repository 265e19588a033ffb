import Foundation
// fulcrum-bench: algorithm quality and speed evidence. Run in release:
//   swift run -c release fulcrum-bench [--record] [--quick]
// Prints markdown tables; --record also writes bench/results/algorithms.md.
import FulcrumCore

struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return StableHash.fmix64(state)
    }
}

let arguments = CommandLine.arguments
let record = arguments.contains("--record")
let quick = arguments.contains("--quick")
var output = ""
@MainActor func emit(_ line: String = "") {
    print(line)
    output += line + "\n"
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

func nanosSince(_ start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9
}

func machine() -> String {
    let kernel =
        (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
    return "nproc \(ProcessInfo.processInfo.activeProcessorCount), kernel \(kernel)"
}

emit("# Fulcrum algorithm benchmarks")
emit()
emit(
    "Produced by `swift run -c release fulcrum-bench --record` on \(ISO8601DateFormatter().string(from: Date())) (\(machine()))."
)
emit()

// MARK: Maglev evaluation (NSDI '16, Fig. 11/12)

let backendCount = 1000
let names = (0..<backendCount).map { "10.\($0 / 250).\($0 % 250).1:80" }
let trials = quick ? 5 : 20
emit("## Maglev (N = \(backendCount) backends, equal weights)")
emit()
var maglevFigures: (build: Double, balance: Double, moved1: Double) = (0, 0, 0)
emit("| M | build ms (median of 15) | min slots | max slots | max/mean | moved k=1 % | k=2 % | k=5 % | k=10 % |")
emit("|---|---|---|---|---|---|---|---|---|")
for size in [65537, 655373] {
    var buildTimes: [Double] = []
    var table: [Int32] = []
    for _ in 0..<15 {
        let start = ContinuousClock.now
        table = Maglev.buildTable(names: names, weights: Array(repeating: 1, count: backendCount), size: size)
        buildTimes.append(nanosSince(start) / 1e6)
    }
    var counts = [Int](repeating: 0, count: backendCount)
    for slot in table { counts[Int(slot)] += 1 }
    let mean = Double(size) / Double(backendCount)
    var moved: [String] = []
    var generator = Generator(state: 7)
    for percent in [1, 2, 5, 10] {
        let removeCount = backendCount * percent / 100
        var shares: [Double] = []
        for _ in 0..<trials {
            let removed = Set((0..<backendCount).shuffled(using: &generator).prefix(removeCount))
            let keptIndices = (0..<backendCount).filter { !removed.contains($0) }
            let smaller = Maglev.buildTable(
                names: keptIndices.map { names[$0] }, weights: Array(repeating: 1, count: keptIndices.count), size: size
            )
            var changed = 0
            for slot in 0..<size where keptIndices[Int(smaller[slot])] != Int(table[slot]) { changed += 1 }
            shares.append(Double(changed) / Double(size) * 100)
        }
        let mean = shares.reduce(0, +) / Double(shares.count)
        moved.append(String(format: "%.2f %%", mean))
        if size == 65537 && percent == 1 { maglevFigures.moved1 = mean }
    }
    if size == 65537 {
        maglevFigures.build = median(buildTimes)
        maglevFigures.balance = Double(counts.max()!) / mean
    }
    emit(
        "| \(size) | \(String(format: "%.2f", median(buildTimes))) | \(counts.min()!) | \(counts.max()!) | "
            + "\(String(format: "%.4f", Double(counts.max()!) / mean)) | \(moved.joined(separator: " | ")) |")
}
emit()
emit(
    "Moved = share of table slots whose backend changes when k % of backends (random, mean of \(trials) trials) are removed; the removed backends' own slots (k %) are included."
)
emit()

// MARK: ns per pick

emit("## Pick cost (ns per pick, one thread, median of 5 runs)")
emit()
emit("| algorithm | N = 10 | N = 100 | N = 1000 |")
emit("|---|---|---|---|")
let picks = quick ? 200_000 : 2_000_000
var sink: UInt64 = 0
var pickAt1000: [AlgorithmKind: Double] = [:]
for kind in AlgorithmKind.allCases {
    var cells: [String] = []
    for n in [10, 100, 1000] {
        let specs = (0..<n).map {
            BackendSpec(endpoint: Endpoint(address: .v4(0x0A00_0000 + UInt32($0 + 1)), port: 80), weight: 1 + $0 % 3)
        }
        let pool = try Pool(name: "bench", settings: PoolSettings(algorithm: kind), backends: specs, now: 1)
        let snapshot = pool.snapshot()
        // Give the load-aware algorithms something to compare.
        for (i, candidate) in snapshot.candidates.enumerated() {
            for _ in 0..<(i % 5) { candidate.backend.connectionOpened() }
            candidate.backend.stats.observeLatency(
                nanos: UInt64(1_000_000 + i * 1000), now: 1, decayNanos: 10_000_000_000)
        }
        var runs: [Double] = []
        for _ in 0..<5 {
            var key: UInt64 = 1
            let start = ContinuousClock.now
            for _ in 0..<picks {
                key = StableHash.fmix64(key &+ 0x9e37_79b9_7f4a_7c15)
                if let backend = snapshot.pick(PickKey(hash: key, now: 2)) {
                    sink &+= UInt64(backend.endpoint.port)
                }
            }
            runs.append(nanosSince(start) / Double(picks))
        }
        cells.append(String(format: "%.1f", median(runs)))
        if n == 1000 { pickAt1000[kind] = median(runs) }
    }
    emit("| \(kind.rawValue) | \(cells.joined(separator: " | ")) |")
}
emit()
emit(
    "Each pick includes deriving a fresh key (one fmix64) and the call through `PoolSnapshot.pick`. Weights 1–3; some backends hold connections and latency samples. (checksum \(sink % 10))"
)

// MARK: Targets of issue 2, checked against the figures above.

let constantTime: [AlgorithmKind] = [.roundRobin, .weightedRoundRobin, .random, .sourceHash, .hash, .maglev]
let worstConstant = constantTime.map { pickAt1000[$0] ?? .infinity }.max()!
let worstTwoChoice = [AlgorithmKind.powerOfTwo, .leastResponseTime].map { pickAt1000[$0] ?? .infinity }.max()!
emit()
emit("## Targets")
emit()
emit("| target | measured | met |")
emit("|---|---|---|")
@MainActor func target(_ name: String, _ measured: String, _ met: Bool) {
    emit("| \(name) | \(measured) | \(met ? "yes" : "NO") |")
}
target(
    "Maglev build ≤ 1.8 ms (M = 65537, N = 1000)", String(format: "%.2f ms", maglevFigures.build),
    maglevFigures.build <= 1.8)
target("Maglev balance max/mean ≤ 1.01", String(format: "%.4f", maglevFigures.balance), maglevFigures.balance <= 1.01)
target("slots moved at k = 1 % ≤ 3.4 %", String(format: "%.2f %%", maglevFigures.moved1), maglevFigures.moved1 <= 3.4)
target(
    "O(1) algorithms ≤ 50 ns per pick at N = 1000", String(format: "worst %.1f ns", worstConstant), worstConstant <= 50)
target(
    "P2C / EWMA ≤ 200 ns per pick at N = 1000", String(format: "worst %.1f ns", worstTwoChoice), worstTwoChoice <= 200)

if record {
    let url = URL(fileURLWithPath: "bench/results/algorithms.md")
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try output.write(to: url, atomically: true, encoding: .utf8)
    print("\nrecorded to \(url.path)")
}
