import Foundation
import FulcrumConfig
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The access log: event loops hand finished records to a bounded queue; one writer thread formats
/// them and appends them to the file, so a slow disk never stalls traffic.
///
/// `record(_:)` is the only call on the data path: a short lock, an append, no IO, no formatting. When
/// `bufferLines` records are already waiting, the record is dropped and counted (`dropped`) rather than
/// blocking. The writer wakes when a quarter of the queue is filled, or every 100 ms, and writes a
/// batch with one `write` call. `reopen()` (SIGHUP) reopens the path for log rotation; `close()` writes
/// what is queued and stops the thread.
public final class AccessLog: @unchecked Sendable {
    // @unchecked: `queue`, `stopping`, `reopenRequested` and `finished` are only touched with
    // `condition` locked; `descriptor` only by the writer thread (and by `close` after it has finished).

    public let path: String
    public let format: AccessLogConfig.Format
    public let capacity: Int
    private let wakeThreshold: Int
    private let condition = NSCondition()
    private var queue: [AccessLogRecord] = []
    private var stopping = false
    private var reopenRequested = false
    private var started = false
    private var finished = false
    private var descriptor: Int32
    private let droppedCount = Atomic<UInt64>(0)
    private let writtenCount = Atomic<UInt64>(0)
    private let writeErrorCount = Atomic<UInt64>(0)
    /// Called on the writer thread with how many lines were dropped since the last call (for metrics).
    private let onDropped: (@Sendable (UInt64) -> Void)?
    private var droppedReported: UInt64 = 0

    /// Opens (creating, appending) the file and starts the writer thread. Throws when the file cannot
    /// be opened, so a bad path fails the start or reload instead of losing every line.
    public static func open(
        _ config: AccessLogConfig, onDropped: (@Sendable (UInt64) -> Void)? = nil
    ) throws -> AccessLog {
        let log = try AccessLog(config, onDropped: onDropped)
        log.start()
        return log
    }

    /// Opens the file without starting the writer (`start()`); tests use it to fill the queue.
    init(_ config: AccessLogConfig, onDropped: (@Sendable (UInt64) -> Void)? = nil) throws {
        path = config.path
        format = config.format
        capacity = config.bufferLines
        wakeThreshold = max(1, config.bufferLines / 4)
        self.onDropped = onDropped
        descriptor = try Self.openFile(config.path)
        queue.reserveCapacity(min(capacity, 4096))
    }

    /// Lines dropped because the queue was full.
    public var dropped: UInt64 { droppedCount.load(ordering: .relaxed) }
    /// Lines written to the file.
    public var written: UInt64 { writtenCount.load(ordering: .relaxed) }
    /// Failed writes (disk full, file gone read-only); their lines are lost, the log goes on.
    public var writeErrors: UInt64 { writeErrorCount.load(ordering: .relaxed) }

    /// Queues one record; never blocks on IO. Called on event loops.
    public func record(_ record: AccessLogRecord) {
        condition.lock()
        guard !stopping, queue.count < capacity else {
            condition.unlock()
            droppedCount.wrappingAdd(1, ordering: .relaxed)
            return
        }
        queue.append(record)
        let wake = queue.count == wakeThreshold
        condition.unlock()
        if wake { condition.signal() }
    }

    /// Reopens the file at the next batch (after log rotation moved it away).
    public func reopen() {
        condition.lock()
        reopenRequested = true
        condition.unlock()
        condition.signal()
    }

    func start() {
        condition.lock()
        guard !started else {
            condition.unlock()
            return
        }
        started = true
        condition.unlock()
        let thread = Thread { [self] in writerLoop() }
        thread.name = "fulcrum-access-log"
        thread.start()
    }

    /// Writes what is queued, stops the writer and closes the file. Blocks (the caller's thread, not
    /// an event loop) until the writer has finished; safe to call more than once.
    public func close() {
        condition.lock()
        stopping = true
        let running = started
        condition.broadcast()
        if running {
            while !finished { condition.wait() }
        }
        let alreadyClosed = descriptor < 0
        condition.unlock()
        if !alreadyClosed && !running {
            Glibc.close(descriptor)
            descriptor = -1
        }
    }

    /// `close()` from async code, on a thread of its own so the cooperative pool is not blocked.
    public func closeAsync() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread { [self] in
                close()
                done.resume()
            }
            thread.start()
        }
    }

    private func writerLoop() {
        var batch: [AccessLogRecord] = []
        var text = ""
        while true {
            condition.lock()
            while queue.isEmpty && !stopping && !reopenRequested {
                _ = condition.wait(until: Date(timeIntervalSinceNow: 0.1))
            }
            swap(&batch, &queue)
            let reopenNow = reopenRequested
            reopenRequested = false
            let stop = stopping
            condition.unlock()

            if reopenNow { reopenFile() }
            if !batch.isEmpty {
                text.removeAll(keepingCapacity: true)
                for record in batch {
                    text += AccessLogFormatter.line(record, format: format)
                    text += "\n"
                }
                if writeAll(text) {
                    writtenCount.wrappingAdd(UInt64(batch.count), ordering: .relaxed)
                } else {
                    writeErrorCount.wrappingAdd(1, ordering: .relaxed)
                }
                batch.removeAll(keepingCapacity: true)
            }
            reportDrops()
            if stop {
                // `stopping` refuses new records, so the queue is empty once this batch is written.
                condition.lock()
                let empty = queue.isEmpty
                condition.unlock()
                if empty { break }
            }
        }
        if descriptor >= 0 {
            Glibc.close(descriptor)
            descriptor = -1
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    private func reportDrops() {
        guard let onDropped else { return }
        let total = dropped
        if total > droppedReported {
            onDropped(total - droppedReported)
            droppedReported = total
        }
    }

    private func writeAll(_ text: String) -> Bool {
        guard descriptor >= 0 else { return false }
        var text = text
        return text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }

    private func reopenFile() {
        guard let fresh = try? Self.openFile(path) else {
            writeErrorCount.wrappingAdd(1, ordering: .relaxed)
            return
        }
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = fresh
    }

    static func openFile(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw AccessLogError(path: path, message: String(cString: strerror(errno))) }
        return fd
    }
}

/// The access log file could not be opened.
public struct AccessLogError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public var description: String { "cannot open access log '\(path)': \(message)" }
}
