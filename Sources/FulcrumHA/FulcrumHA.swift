import FulcrumCore

/// FulcrumHA: VRRPv3 (RFC 5798) for IPv4 — the advert codec and the state machine (pure), and the
/// transport that drives them (issue 6).
public enum FulcrumHA {
    /// IP protocol number of VRRP (RFC 5798 §5.1.1.3).
    public static let vrrpProtocol: UInt8 = 112
    /// The IPv4 multicast group adverts go to (RFC 5798 §5.1.1.2): 224.0.0.18.
    public static let vrrpMulticastGroup = IPAddress.v4(0xE000_0012)
    /// Adverts are sent with TTL 255 and a receiver drops any other TTL (RFC 5798 §5.1.1.3, §7.1), which
    /// proves the sender is on the same link.
    public static let vrrpTTL: UInt8 = 255
}
