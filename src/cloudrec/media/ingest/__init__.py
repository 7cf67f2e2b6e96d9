"""The embedded RTMP ingest.

Sans-I/O protocol code (:mod:`.amf0`, :mod:`.handshake`, :mod:`.chunks`, :mod:`.messages`,
:mod:`.flv`, :mod:`.meta`) and the asyncio server that uses it (:mod:`.server`,
:mod:`.connection`, :mod:`.live`).  The entry point is
:class:`cloudrec.media.ingest.server.RtmpServer`.
"""
