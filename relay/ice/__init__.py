"""The relay's ICE extensions of aioice: how its peer connections gather (fixed host
addresses, a UDP port range, announced public addresses) and ICE over TCP on the
page's own port (:mod:`.tcp`, :mod:`.demux`). Applied per peer connection through
:func:`relay.aiortc_patches.adopt`."""
