import APIServer
import CPUBackend

/// `--api-sock`: the API server thread and the controller it drives, for one machine's run.
/// Created before the seccomp filter (it binds the socket and starts its thread), finished
/// when the vCPU returns.
public final class APISession: @unchecked Sendable {
    public let controller: VMController
    let server: APIServer

    /// Binds the socket and starts serving. Nil without a path.
    public static func start(socketPath: String?, machine: Machine, memoryIsAnonymous: Bool) throws(MachineError)
        -> APISession?
    {
        guard let socketPath else { return nil }
        // Pause, snapshot and resume stop the one vCPU thread they run on; with more, the others
        // would run on (and a snapshot would be torn).
        guard machine.config.cpus == 1 else {
            throw .invalidArgument("--api-sock works with one vCPU for now (--cpus 1)")
        }
        let controller = VMController(machine: machine, memoryIsAnonymous: memoryIsAnonymous)
        let server: APIServer
        do { server = try APIServer(path: socketPath, router: APIRouter(operations: controller)) } catch {
            throw .invalidArgument(error.description)
        }
        server.start()
        return APISession(controller: controller, server: server)
    }

    private init(controller: VMController, server: APIServer) {
        self.controller = controller
        self.server = server
    }

    /// Installs the seccomp filters for a run with or without an API session: without, the vCPU
    /// profile on every thread; with, the API profile on every thread (the server thread keeps
    /// that one) and the vCPU profile stacked on the calling (vCPU) thread. `hybrid`: both filters
    /// also allow what the hybrid backend needs.
    public static func confine(_ session: APISession?, hybrid: Bool = false) throws(MachineError) {
        guard session != nil else { try Seccomp.install(.vcpu, hybrid: hybrid); return }
        try Seccomp.install(.apiServer, hybrid: hybrid)
        try Seccomp.install(.vcpuWithAPI, allThreads: false, hybrid: hybrid)
    }

    /// The vCPU has returned: fail what is pending, stop serving, remove the socket file.
    public func finish(_ why: String) {
        controller.vcpuStopped(why)
        server.stop()
    }
}
