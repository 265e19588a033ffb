import FulcrumPacket
import Testing

/// Issue 6 point 2: a DSR worker announces its VIP with gratuitous ARPs each time it starts owning it (the HA
/// master), and not while it keeps or lacks ownership.
@Suite struct VIPOwnershipTests {
    @Test func announcesOnEachTakeoverOnly() {
        var ownership = VIPOwnership()
        let sequence = [true, true, false, false, true, false, true, true]
        let sent = sequence.map { ownership.announcements(owner: $0) }
        let burst = VIPOwnership.repeatCount
        #expect(burst > 1)
        #expect(sent == [burst, 0, 0, 0, burst, 0, burst, 0])
    }

    @Test func standbyFromTheStartStaysSilentUntilItOwns() {
        var ownership = VIPOwnership()
        #expect(ownership.announcements(owner: false) == 0)
        #expect(ownership.announcements(owner: false) == 0)
        #expect(ownership.announcements(owner: true) == VIPOwnership.repeatCount)
    }
}
