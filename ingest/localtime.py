"""The one default time zone of meter clocks and local days, when the site configures none.

The `timezone` setting (and a bus's or concentrator's own `timezone`) override it; simulators
and the API take it as their default argument rather than repeating the name."""

from __future__ import annotations

DEFAULT_TIMEZONE = "Asia/Shanghai"
