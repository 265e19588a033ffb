/// Parses a duration as written in the config: a number with a unit, or several (`1m30s`).
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`; decimals are allowed (`1.5s`). Bare numbers are
/// not durations (is `30` seconds or milliseconds?), nor are negative values. Returns nil when `text`
/// is not a duration or does not fit in 64-bit nanoseconds.
public func parseDuration(_ text: String) -> Duration? {
    let scalars = Array(text.unicodeScalars)
    var index = 0
    var totalNanoseconds: Int64 = 0
    var sawComponent = false

    func isDigit(_ s: Unicode.Scalar) -> Bool { s >= "0" && s <= "9" }

    while index < scalars.count {
        // Number: digits, optionally "." and more digits.
        var integerDigits: [Int64] = []
        var fractionDigits: [Int64] = []
        while index < scalars.count, isDigit(scalars[index]) {
            integerDigits.append(Int64(scalars[index].value - 48))
            index += 1
        }
        if index < scalars.count, scalars[index] == "." {
            index += 1
            while index < scalars.count, isDigit(scalars[index]) {
                fractionDigits.append(Int64(scalars[index].value - 48))
                index += 1
            }
        }
        guard !integerDigits.isEmpty || !fractionDigits.isEmpty else { return nil }

        // Unit: the longest match wins, so "ms" is not read as "m" followed by "s".
        var unitNanoseconds: Int64 = 0
        for (name, nanoseconds) in durationUnits {
            let nameScalars = Array(name.unicodeScalars)
            if index + nameScalars.count <= scalars.count,
                Array(scalars[index..<(index + nameScalars.count)]) == nameScalars
            {
                unitNanoseconds = nanoseconds
                index += nameScalars.count
                break
            }
        }
        guard unitNanoseconds > 0 else { return nil }

        var value: Int64 = 0
        for digit in integerDigits {
            let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
            let (added, o2) = shifted.addingReportingOverflow(digit)
            guard !o1, !o2 else { return nil }
            value = added
        }
        let (scaled, o3) = value.multipliedReportingOverflow(by: unitNanoseconds)
        guard !o3 else { return nil }
        var fraction: Int64 = 0
        var place = unitNanoseconds
        for digit in fractionDigits {
            place /= 10
            if place == 0 { break }  // finer than a nanosecond: dropped
            fraction += digit * place
        }
        let (componentTotal, o4) = scaled.addingReportingOverflow(fraction)
        let (newTotal, o5) = totalNanoseconds.addingReportingOverflow(componentTotal)
        guard !o4, !o5 else { return nil }
        totalNanoseconds = newTotal
        sawComponent = true
    }
    guard sawComponent else { return nil }
    return .nanoseconds(totalNanoseconds)
}

/// Longest names first so that prefix matching picks `ms` over `m`.
private let durationUnits: [(String, Int64)] = [
    ("ns", 1), ("us", 1_000), ("µs", 1_000), ("μs", 1_000), ("ms", 1_000_000),
    ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
]

/// Writes a duration the way the config reads it, in the largest unit that represents it exactly:
/// `2s`, `1.5s`, `250ms`, `5m`, `0s`. `parseDuration(formatDuration(d)) == d` for durations of whole nanoseconds.
public func formatDuration(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let nanosecondsFraction = attoseconds / 1_000_000_000
    let (secondsInNanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    guard !overflow, seconds >= 0 else { return "\(seconds)s" }
    let (nanoseconds, overflow2) = secondsInNanoseconds.addingReportingOverflow(nanosecondsFraction)
    guard !overflow2 else { return "\(seconds)s" }
    if nanoseconds == 0 { return "0s" }
    // 1.5s and 40.95s read better than 1500ms and 40950ms.
    let second: Int64 = 1_000_000_000
    if nanoseconds > second, nanoseconds % second != 0, nanoseconds % 1_000_000 == 0 {
        var fraction = String(nanoseconds % second / 1_000_000)
        fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(nanoseconds / second).\(fraction)s"
    }
    let units: [(String, Int64)] = [
        ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000),
    ]
    for (name, size) in units where nanoseconds % size == 0 {
        return "\(nanoseconds / size)\(name)"
    }
    return "\(nanoseconds)ns"
}
