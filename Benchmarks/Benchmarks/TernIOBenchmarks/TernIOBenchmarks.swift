// Allocations and ARC traffic on the reactor's hot paths, per operation, after warm-up. The claim they test:
// in steady state the relay path allocates nothing and retains nothing (STYLE.md, "The request path").
import Benchmark
import Glibc
import TernCore
import TernIO

/// A connected loopback pair and a pipe, as the relay uses them.
final class SpliceRig<B: IOBackend> {
    let backend: B
    let pipes = PipePool(maxIdle: 1, preferredCapacity: 65536, reserve: 0)
    let pipe: Pipe
    let clientIn: Int32, serverIn: Int32, clientOut: Int32, serverOut: Int32
    var byte: [UInt8] = [7]

    init() throws {
        backend = try B(settings: BackendSettings())
        (serverIn, clientIn) = try Self.pair()
        (serverOut, clientOut) = try Self.pair()
        pipe = pipes.acquire()!
    }

    static func pair() throws -> (Int32, Int32) {
        let l = try System.listen(on: SocketAddress(parsing: "127.0.0.1:0")!)
        let address = try System.localAddress(l)
        let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var s = address.storage
        _ = withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, address.length) } }
        let server = accept(l, nil, nil)
        close(l)
        return (server, c)
    }

    func waitFor(_ token: Token) throws -> Int32 {
        while true {
            let n = try backend.wait(timeoutNanos: 1_000_000_000)
            for i in 0..<n where backend.completion(at: i).token == token { return backend.completion(at: i).result }
        }
    }

    /// One relay step for one byte: client writes, splice socket → pipe, splice pipe → socket, peer reads.
    func relayOneByte() throws {
        _ = write(clientIn, &byte, 1)
        let read = Token(op: 4, slot: 0, generation: 0)
        backend.splice(from: serverIn, to: pipe.writeEnd, count: pipe.capacity, waitFor: .readable(serverIn), token: read)
        _ = try waitFor(read)
        let written = Token(op: 5, slot: 0, generation: 0)
        backend.splice(from: pipe.readEnd, to: serverOut, count: 1, waitFor: .writable(serverOut), token: written)
        _ = try waitFor(written)
        _ = Glibc.read(clientOut, &byte, 1)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        // Allocation counts are exact; times are reported, never gated (the machines are shared).
        metrics: [.mallocCountTotal, .wallClock],
        warmupIterations: 100,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000
    )

    Benchmark("Slab insert+remove") { benchmark in
        let slab = Slab<(Int32, Int32)>(capacity: 1024)
        for _ in benchmark.scaledIterations {
            let id = slab.insert((1, 2))!
            blackHole(slab[id])
            slab.remove(id)
        }
    }

    Benchmark("TimerWheel schedule+cancel") { benchmark in
        let wheel = TimerWheel(capacity: 1024, now: System.monotonicNanos())
        for i in benchmark.scaledIterations {
            let id = wheel.schedule(Token(raw: UInt64(i)), at: System.monotonicNanos() + 5_000_000_000)!
            wheel.cancel(id)
        }
    }

    Benchmark("epoll relay 1 byte (splice in + out)") { benchmark in
        let rig = try SpliceRig<EpollBackend>()
        for _ in 0..<100 { try rig.relayOneByte() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try rig.relayOneByte() }
    }

    Benchmark("io_uring relay 1 byte (splice in + out)") { benchmark in
        guard let rig = try? SpliceRig<URingBackend>() else { return }
        for _ in 0..<100 { try rig.relayOneByte() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try rig.relayOneByte() }
    }
}
