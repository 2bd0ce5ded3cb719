import CPUBackend

extension X86Interpreter {
    /// For `--boot-timer` and `run-image`: guest instructions retired so far.
    public var guestInstructionCount: UInt64? { instructionsRetired }
}

extension X86Interpreter {
    public var statisticsReport: String? { translationReport }
}
