import CFulcrumLinux
import Testing

@Suite struct ShimTests {
    @Test func shimLinks() { #expect(fulcrum_linux_shim_version() == 1) }
}
