import CPUBackend

extension X86Interpreter {
    /// Nothing the interpreter runs into is a host failure: guest faults are guest events.
    public typealias Failure = Never


    /// For `--boot-timer` and `run-image`: guest instructions retired so far.
    public var guestInstructionCount: UInt64? { instructionsRetired }
}

extension X86Interpreter {
    public var statisticsReport: String? { translationReport }
}
