import FulcrumHA
import Testing

@Suite struct FulcrumHAModuleTests {
    @Test func moduleLinks() { #expect(String(describing: FulcrumHA.self) == "FulcrumHA") }
}
