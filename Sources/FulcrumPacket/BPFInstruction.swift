/// A few eBPF instructions and their 8-byte encoding (kernel `struct bpf_insn`: opcode, dst/src registers,
/// 16-bit offset, 32-bit immediate, little-endian), with named jump targets resolved by `assemble`. Shared by the
/// hand-assembled tcx programs (`IPIPEncapsulationProgram`, `IPIPDecapsulationProgram`).
enum BPFInstruction {
    enum Register: UInt8 {
        case r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10
    }

    enum Size: UInt8 {
        case word = 0x00
        case half = 0x08
        case byte = 0x10
        case double = 0x18
    }

    /// Kernel helper ids (`enum bpf_func_id`).
    enum Helper: Int32 {
        case skbStoreBytes = 9
        case skbLoadBytes = 26
        case csumDiff = 28
        case skbAdjustRoom = 50
    }

    case raw(opcode: UInt8, dst: Register, src: Register, offset: Int16, immediate: Int32)
    case jump(opcode: UInt8, dst: Register, immediate: Int32, label: String)
    case label(String)

    static func mov64(_ dst: Register, _ src: Register) -> Self {
        .raw(opcode: 0xBF, dst: dst, src: src, offset: 0, immediate: 0)
    }
    static func mov64(_ dst: Register, _ value: Int32) -> Self {
        .raw(opcode: 0xB7, dst: dst, src: .r0, offset: 0, immediate: value)
    }
    static func add64(_ dst: Register, _ value: Int32) -> Self {
        .raw(opcode: 0x07, dst: dst, src: .r0, offset: 0, immediate: value)
    }
    static func add64(_ dst: Register, _ src: Register) -> Self {
        .raw(opcode: 0x0F, dst: dst, src: src, offset: 0, immediate: 0)
    }
    static func and64(_ dst: Register, _ value: Int32) -> Self {
        .raw(opcode: 0x57, dst: dst, src: .r0, offset: 0, immediate: value)
    }
    static func xor64(_ dst: Register, _ value: Int32) -> Self {
        .raw(opcode: 0xA7, dst: dst, src: .r0, offset: 0, immediate: value)
    }
    static func rsh64(_ dst: Register, _ value: Int32) -> Self {
        .raw(opcode: 0x77, dst: dst, src: .r0, offset: 0, immediate: value)
    }
    /// `dst = htobe16(dst)` (BPF_ALU | BPF_END | BPF_TO_BE): the low 16 bits byte-swapped, the rest cleared.
    static func toBigEndian16(_ dst: Register) -> Self {
        .raw(opcode: 0xDC, dst: dst, src: .r0, offset: 0, immediate: 16)
    }
    static func loadX(_ size: Size, _ dst: Register, _ src: Register, _ offset: Int16) -> Self {
        .raw(opcode: 0x61 | size.rawValue, dst: dst, src: src, offset: offset, immediate: 0)
    }
    static func storeX(_ size: Size, _ dst: Register, _ offset: Int16, _ src: Register) -> Self {
        .raw(opcode: 0x63 | size.rawValue, dst: dst, src: src, offset: offset, immediate: 0)
    }
    static func store(_ size: Size, _ dst: Register, _ offset: Int16, _ value: Int32) -> Self {
        .raw(opcode: 0x62 | size.rawValue, dst: dst, src: .r0, offset: offset, immediate: value)
    }
    static func jumpNotEqual(_ dst: Register, _ value: Int32, label: String) -> Self {
        .jump(opcode: 0x55, dst: dst, immediate: value, label: label)
    }
    /// `if (u32)dst == (u32)value goto label` (BPF_JMP32 | BPF_JEQ | BPF_K): compares the low 32 bits, so a word
    /// read from the packet matches an immediate whose top bit is set (a 64-bit compare would sign-extend it).
    static func jump32Equal(_ dst: Register, _ value: Int32, label: String) -> Self {
        .jump(opcode: 0x16, dst: dst, immediate: value, label: label)
    }
    /// `goto label` (BPF_JMP | BPF_JA).
    static func jump(label: String) -> Self {
        .jump(opcode: 0x05, dst: .r0, immediate: 0, label: label)
    }
    static func call(_ helper: Helper) -> Self {
        .raw(opcode: 0x85, dst: .r0, src: .r0, offset: 0, immediate: helper.rawValue)
    }
    static let exit = Self.raw(opcode: 0x95, dst: .r0, src: .r0, offset: 0, immediate: 0)

    static func encode(opcode: UInt8, dst: Register, src: Register, offset: Int16, immediate: Int32) -> UInt64 {
        UInt64(opcode) | UInt64(dst.rawValue | src.rawValue << 4) << 8
            | UInt64(UInt16(bitPattern: offset)) << 16 | UInt64(UInt32(bitPattern: immediate)) << 32
    }

    /// Encodes `program`, resolving each jump to its label (offsets count instructions after the jump).
    static func assemble(_ program: [BPFInstruction]) -> [UInt64] {
        var positions: [String: Int] = [:]
        var index = 0
        for instruction in program {
            if case .label(let name) = instruction { positions[name] = index } else { index += 1 }
        }
        var out: [UInt64] = []
        for instruction in program {
            switch instruction {
            case .raw(let opcode, let dst, let src, let offset, let immediate):
                out.append(encode(opcode: opcode, dst: dst, src: src, offset: offset, immediate: immediate))
            case .jump(let opcode, let dst, let immediate, let label):
                let target = positions[label]!
                let offset = Int16(target - out.count - 1)
                out.append(encode(opcode: opcode, dst: dst, src: .r0, offset: offset, immediate: immediate))
            case .label:
                break
            }
        }
        return out
    }
}
