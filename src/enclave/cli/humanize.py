"""Values as a person reads them: rounded, with their unit, chosen from the field's name.

The API's field names carry their units (``energy_kwh``, ``walltime_s``, ``size_bytes``), so a
table cell is formatted from the column's name alone: ``1.0768611111111111e-05`` under
``energy_kwh`` reads ``0.0108 Wh``. Machine formats (``--json``, ``-o yaml|csv``) never go
through here: they keep the exact values.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

SIGNIFICANT_DIGITS = 3
_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """``value`` to ``digits`` significant digits in fixed notation (never ``1e-05``)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = min(12, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value: float, steps: tuple[tuple[float, str], ...]) -> str:
    """The largest unit of ``steps`` (factor, suffix), ascending, that keeps ``value`` >= 1;
    zero in the unit of factor 1 (`0 kWh`, not `0 mWh`)."""
    if value == 0:
        return f"0 {dict(steps)[1.0]}"
    factor, suffix = steps[0]
    for f, s in steps:
        if abs(value) >= f:
            factor, suffix = f, s
    return f"{sig(value / factor)} {suffix}"


def energy_kwh(kwh: float) -> str:
    return _scaled(kwh, ((1e-6, "mWh"), (1e-3, "Wh"), (1.0, "kWh"), (1e3, "MWh"), (1e6, "GWh")))


def carbon_kg(kg: float) -> str:
    return _scaled(kg, ((1e-6, "mgCO2e"), (1e-3, "gCO2e"), (1.0, "kgCO2e"), (1e3, "tCO2e")))


def power_mw(mw: float) -> str:
    return _scaled(mw, ((1e-6, "W"), (1e-3, "kW"), (1.0, "MW"), (1e3, "GW")))


def hours(h: float) -> str:
    """Resource-hours (CPU-, GPU-hours): a duration under one hour, else hours."""
    return duration_s(h * 3600) if 0 < abs(h) < 1 else f"{sig(h)} h"


def money(amount: float) -> str:
    """Dollars to the cent; a cost under a cent reads `<$0.01`, not `$0.00` (it is not free)."""
    return "<$0.01" if 0 < amount < 0.005 else f"${amount:,.2f}"


def size_bytes(n: float) -> str:
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(n)} B" if unit == 0 else f"{value:.1f} {_SIZE_UNITS[unit]}"


def duration_s(seconds: float) -> str:
    if abs(seconds) < 60:
        return f"{sig(seconds)}s"
    days, rest = divmod(round(seconds), 86400)
    hrs, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hrs, "h"), (minutes, "m"), (secs, "s")]
    first = next(i for i, (n, _) in enumerate(parts) if n)
    return " ".join(f"{n}{u}" for n, u in parts[first : first + 2] if n)


def timestamp(text: str) -> str:
    """ISO 8601 from the API, to the second; UTC written ``Z``. Anything else unchanged."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None):
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    return moment.isoformat(sep=" ", timespec="seconds")


def _number(key: str, value: float) -> str:
    k = key.lower()
    if k.endswith("kwh"):
        return energy_kwh(value)
    if "kgco2e" in k:
        return carbon_kg(value)
    if k == "cost" or k.endswith("_cost") or k.startswith("cost_"):
        return money(value)
    if k.endswith("bytes"):
        return size_bytes(value)
    if k.endswith("_s"):
        return duration_s(value)
    if k.endswith("_hours"):
        return hours(value)
    if k.endswith("_mw"):
        return power_mw(value)
    if k.endswith(("_pct", "_percent")):
        return f"{sig(value)}%"
    if k.endswith(("_fraction", "_share", "utilisation", "utilization")):
        return f"{sig(value * 100)}%"
    if isinstance(value, float):
        return sig(value, 4)
    return f"{value:,}" if abs(value) >= 10_000 else str(value)


def human(key: str, value: Any) -> str:
    """One value of field ``key`` as text for a table cell or a key/value line."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(key, value)
    if isinstance(value, dict):
        unset = "unlimited" if key == "quotas" else "-"  # a quota left unset is no limit
        return ", ".join(f"{k}={unset if v is None else human(str(k), v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(human(key, v) for v in value) or "-"
    if isinstance(value, str) and key.endswith("_at"):
        return timestamp(value)
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
