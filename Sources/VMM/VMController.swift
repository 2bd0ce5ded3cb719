import APIServer
import CPUBackend
import Glibc
import JSONCoding
import KVM
import Snapshot

/// Drives a running machine for the API socket: pause, resume, information, snapshots. Called on
/// the API thread; everything that touches the machine runs on the vCPU thread (posted through
/// `VMControl.post`, or handed to the paused vCPU directly), and each call returns only once the
/// vCPU has acted: `pause()` returns when the guest is paused and its clocks are stopped.
///
/// A paused vCPU waits inside a posted closure (`pausedLoop`), so neither backend needs to know
/// about pausing: both already run posted work between instructions (interpreter) or exits (KVM),
/// and from HLT.
public final class VMController: VMOperations, @unchecked Sendable {
    public enum RunState: String, Sendable { case running = "Running", paused = "Paused", stopped = "Stopped" }

    let machine: Machine
    /// Guest RAM is anonymous memory (not mapped from a snapshot): untouched pages read as zero.
    let memoryIsAnonymous: Bool
    /// Disk paths made absolute at start (the API thread cannot resolve them later under seccomp).
    let diskPaths: [String]
    let startedAt = VirtualClock.hostMonotonicNs()

    private let monitor = Monitor()
    // Guarded by `monitor`:
    private var state = RunState.running
    private var stopReason = ""
    /// Work for the vCPU thread while it sits in `pausedLoop`.
    private var pausedWork: [Job] = []
    /// Every job handed to the vCPU and not finished: failed if the vCPU goes away first.
    private var outstanding: [ObjectIdentifier: Job] = [:]
    /// KVM's clocks while paused.
    private var kvmClocks: KVMPausedClocks?

    /// What goes into a snapshot beyond RAM, machine and disks (see `SnapshotPart`).
    let parts: [any SnapshotPart]

    public init(machine: Machine, memoryIsAnonymous: Bool = true, parts: [any SnapshotPart] = Machine.snapshotParts) {
        self.machine = machine
        self.memoryIsAnonymous = memoryIsAnonymous
        self.parts = parts
        diskPaths = machine.config.disks.map { d in
            guard let p = realpath(d.path, nil) else { return d.path }
            defer { free(p) }
            return String(cString: p)
        }
        let monitor = self.monitor
        // A stop request (Ctrl-A x, a guest reset) must wake a paused vCPU so it can leave.
        kickerID = machine.control.addKicker { monitor.broadcast() }
    }

    deinit { machine.control.removeKicker(kickerID) }

    private var kickerID = 0

    public var runState: RunState { monitor.locked { state } }

    /// The vCPU thread has returned from `Machine.run`: nothing will act on requests any more.
    public func vcpuStopped(_ why: String) {
        let pending: [Job] = monitor.locked {
            state = .stopped
            stopReason = why
            let p = Array(outstanding.values)
            outstanding.removeAll()
            pausedWork.removeAll()
            return p
        }
        for j in pending { j.finish(.failure(.stopped(why))) }
        monitor.broadcast()
    }

    // MARK: Running work on the vCPU thread

    /// One request for the vCPU thread and its answer.
    final class Job: @unchecked Sendable {
        let work: () -> Result<JSONValue?, APIFault>
        /// Runs on the vCPU thread after the answer is out (the pause: waiting while paused).
        let after: (() -> Void)?
        private let done = Monitor()
        private var result: Result<JSONValue?, APIFault>?

        init(_ work: @escaping () -> Result<JSONValue?, APIFault>, after: (() -> Void)? = nil) {
            self.work = work
            self.after = after
        }

        /// First result wins (a job failed because the vCPU stopped may still be run later).
        func finish(_ r: Result<JSONValue?, APIFault>) {
            done.locked { if result == nil { result = r } }
            done.broadcast()
        }

        var isFinished: Bool { done.locked { result != nil } }

        func wait() -> Result<JSONValue?, APIFault> {
            done.locked {
                while result == nil { done.waitLocked() }
                return result!
            }
        }
    }

    /// Runs `work` on the vCPU thread and returns its result: posted to the running vCPU, or
    /// handed to the paused one.
    @discardableResult
    func onVcpu(_ work: @escaping () throws(APIFault) -> JSONValue?, after: (() -> Void)? = nil) throws(APIFault)
        -> JSONValue?
    {
        let job = Job({ () -> Result<JSONValue?, APIFault> in
            do throws(APIFault) { return .success(try work()) } catch { return .failure(error) }
        }, after: after)
        // Registered under the lock; a job the vCPU never gets to is failed by `vcpuStopped`.
        // (State changes only through jobs, which this one API client sends one at a time.)
        enum Route { case failed(APIFault), paused, running }
        let route: Route = monitor.locked {
            switch state {
            case .stopped: return .failed(.stopped(stopReason))
            case .paused:
                outstanding[ObjectIdentifier(job)] = job
                pausedWork.append(job)
                return .paused
            case .running:
                outstanding[ObjectIdentifier(job)] = job
                return .running
            }
        }
        switch route {
        case .failed(let f): throw f
        case .paused: monitor.broadcast()
        // Outside the lock: posting kicks the vCPU, and our kicker takes the lock.
        case .running: machine.control.post { [unowned self] in self.run(job) }
        }
        return try job.wait().get()
    }

    /// vCPU thread: runs a job unless it was already failed.
    private func run(_ job: Job) {
        guard !job.isFinished else { return }
        let result = job.work()
        monitor.locked { _ = outstanding.removeValue(forKey: ObjectIdentifier(job)) }
        let succeeded = if case .success = result { true } else { false }
        job.finish(result)
        if succeeded { job.after?() }
    }

    // MARK: Pause and resume (vCPU thread inside the jobs)

    public func pause() throws(APIFault) {
        try onVcpu({ [unowned self] () throws(APIFault) -> JSONValue? in
            guard self.runState == .running else { throw APIFault("the VM is already paused") }
            try self.stopGuestTime()
            self.monitor.locked { self.state = .paused }
            return nil
        }, after: { [unowned self] in
            // The API has its answer; this vCPU waits right here, between two guest
            // instructions (or exits), until resumed.
            self.pausedLoop()
        })
    }

    public func resume() throws(APIFault) {
        try onVcpu { [unowned self] () throws(APIFault) -> JSONValue? in
            guard self.runState == .paused else { throw APIFault("the VM is not paused (it is running)") }
            try self.restartGuestTime()
            self.monitor.locked { self.state = .running }
            return nil
        }
    }

    /// The paused vCPU: runs what the API hands it until resumed or asked to stop.
    private func pausedLoop() {
        while true {
            let next: Job? = monitor.locked {
                while state == .paused && pausedWork.isEmpty && machine.control.stopRequest == nil {
                    monitor.waitLocked()
                }
                return pausedWork.isEmpty ? nil : pausedWork.removeFirst()
            }
            if let job = next { run(job); continue }
            // Resumed, or stopping (the run loop sees the stop request next).
            if machine.control.stopRequest != nil && runState == .paused {
                machine.clock.thaw()
            }
            return
        }
    }

    private func stopGuestTime() throws(APIFault) {
        if let kvm = machine.backend as? KVMBackend {
            do { kvmClocks = try kvm.freezeGuestTime() } catch { throw APIFault("cannot pause: KVM: \(error)", status: 500) }
        }
        machine.clock.freeze()
    }

    private func restartGuestTime() throws(APIFault) {
        if let kvm = machine.backend as? KVMBackend, let c = kvmClocks {
            do { try kvm.resumeGuestTime(c) } catch { throw APIFault("cannot resume: KVM: \(error)", status: 500) }
            kvmClocks = nil
        }
        machine.clock.thaw()
    }

    // MARK: Information

    public func vmInfo() throws(APIFault) -> JSONValue {
        try onVcpu { [unowned self] () throws(APIFault) -> JSONValue? in
            var o = JSONObject()
            o["state"] = .string(self.runState.rawValue)
            o["backend"] = .string(self.machine.backend.name)
            o["guest_instructions"] = self.machine.backend.guestInstructionCount.map { .number(JSONNumber($0)) } ?? .null
            o["vm_clock_ns"] = .number(JSONNumber(self.machine.clock.nowNs))
            o["mem_size_mib"] = .number(JSONNumber(self.machine.memory.size >> 20))
            return .object(o)
        } ?? .null
    }

    public func instanceInfo() throws(APIFault) -> JSONValue {
        let s = runState
        if s == .stopped { throw .stopped(monitor.locked { stopReason }) }
        return .object(JSONObject([("app_name", "swhv"), ("id", .string("swhv-\(getpid())")),
                                   ("state", .string(s.rawValue)), ("vmm_version", .string(VMController.version))]))
    }

    public static let version = "0.1.0"

    public func machineConfig() throws(APIFault) -> JSONValue {
        .object(JSONObject([("vcpu_count", 1), ("mem_size_mib", .number(JSONNumber(machine.memory.size >> 20))),
                            ("smt", false), ("track_dirty_pages", false), ("huge_pages", "None")]))
    }

    public func sendCtrlAltDel() throws(APIFault) {
        try onVcpu { [unowned self] () throws(APIFault) -> JSONValue? in
            let kbd = self.machine.platform.i8042
            guard kbd.injectCtrlAltDel() else {
                throw APIFault("the guest's keyboard is disabled or has not read earlier keys; nothing was sent")
            }
            return nil
        }
    }

    // MARK: Snapshots

    public func createSnapshot(statePath: String, memoryPath: String) throws(APIFault) {
        // Captured on the (paused) vCPU thread; the files are written here, on the API thread,
        // whose seccomp filter allows creating them. Guest RAM does not change meanwhile: the
        // vCPU stays paused until a resume, which this client cannot send before we answer.
        var captured: SnapshotContents?
        try onVcpu { [unowned self] () throws(APIFault) -> JSONValue? in
            guard self.runState == .paused else {
                throw APIFault("the VM is running: pause it first (PATCH /vm {\"state\": \"Paused\"}, or swhv pause)")
            }
            do throws(SnapshotError) { captured = try self.machine.captureSnapshotContents(parts: self.parts) } catch {
                throw APIFault(error.description)
            }
            return nil
        }
        guard var contents = captured else { throw APIFault("nothing was captured", status: 500) }
        do throws(SnapshotError) {
            contents.disks = []
            for (d, path) in zip(machine.config.disks, diskPaths) {
                contents.disks.append(try DiskIdentity.current(path: path, readOnly: d.readOnly, serial: d.serial))
            }
            lastSnapshot = try SnapshotWriter.write(statePath: statePath, memoryPath: memoryPath, contents: contents,
                                                    memory: machine.memory,
                                                    residency: memoryIsAnonymous ? PageResidency() : nil)
        } catch {
            throw APIFault(error.description)
        }
    }

    /// The last snapshot written (sizes), for the CLI and the benchmark.
    public private(set) var lastSnapshot: SnapshotSummary?

    public func loadSnapshot(statePath: String, memoryPath: String, resume: Bool) throws(APIFault) {
        throw APIFault("a snapshot can only be loaded into a new VM: run 'swhv restore DIR' (this VM is already running)")
    }
}

/// A pthread mutex with one condition variable.
final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond); pthread_mutex_destroy(mutex)
        cond.deallocate(); mutex.deallocate()
    }

    func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a broadcast; call with the lock held (inside `locked`).
    func waitLocked() { pthread_cond_wait(cond, mutex) }

    func broadcast() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }
}
