"""How Sluice writes numbers and sizes for people: one home for pages, messages and lineage details."""


def human_bytes(n: int | None) -> str:
    """A byte count as people read it (1 GiB, 512 MiB, 10 KiB, 300 bytes)."""
    if n is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:,.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return str(n)


def number(value) -> str:
    """A stored number as people read it: whole doubles without '.0', others as Python writes them."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
