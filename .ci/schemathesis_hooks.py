"""Schemathesis hooks for Flatline's binary request bodies.

TUS uploads (`application/offset+octet-stream`) and multi-recipient sends (`application/vnd.signal-messenger.mrm`)
are opaque bytes on the wire; schemathesis only knows `application/octet-stream`, so both reuse its serializer and
are fuzzed like any other operation instead of being left out.
"""

import schemathesis

schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/vnd.signal-messenger.mrm"],
    "application/octet-stream",
)
