"""Errors of the collecting side.

    CollectorError
    ├── ConfigError             a register map or device definition that cannot work
    └── DeviceError             one poll of one device failed; the others go on
        ├── DeviceTimeout       no reply within the timeout
        ├── DeviceUnreachable   the endpoint refused or dropped the connection
        ├── DeviceRejected      the device answered with an exception code (Modbus) or NAK
        └── FrameError          a reply that does not decode (wrong length, checksum …)

Each DeviceError has a short `kind` used as the metrics label.
"""


class CollectorError(Exception):
    """Base of the collecting side's errors."""


class ConfigError(CollectorError):
    """A configuration that cannot work. The message names the file and the entry."""


class DeviceError(CollectorError):
    kind = "error"
    retryable = True  # whether another attempt right away may succeed


class DeviceTimeout(DeviceError):
    kind = "timeout"


class DeviceUnreachable(DeviceError):
    kind = "unreachable"


class DeviceRejected(DeviceError):
    kind = "exception_response"

    def __init__(
        self, message: str, code: int | None = None, *, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        # By default the Modbus rule: 1-3 (illegal function / address / value) are the map's
        # fault, not the moment's; other codes (busy, gateway) may pass.
        self.retryable = code not in (1, 2, 3) if retryable is None else retryable


class FrameError(DeviceError):
    kind = "bad_frame"
