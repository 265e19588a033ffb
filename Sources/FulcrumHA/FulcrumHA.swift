/// FulcrumHA: VRRPv3 (RFC 5798) state machine and transport, VIP handling, state mirroring (issue 6).
public enum FulcrumHA {}
