/// FulcrumPacket: the packet plane (issue 5). Pure header parsing/rewriting and the flow table,
/// plus IO worker threads over TUN and AF_PACKET.
public enum FulcrumPacket {}
