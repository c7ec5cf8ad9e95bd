"""Editing dm_control's stock model files."""

from __future__ import annotations


def edited_stock_model(filename: str, old: str, new: str) -> str:
    """dm_control's model `filename` with `old` replaced by `new`; fails loudly if the stock file
    does not contain `old` exactly once (a dm_control other than the pinned 1.0.50)."""
    from dm_control.suite import common

    xml = common.read_model(filename).decode()
    if xml.count(old) != 1:
        raise ValueError(f"dm_control's {filename} does not contain exactly one {old!r}; "
                         "the dm_control version differs from the pinned 1.0.50")
    return xml.replace(old, new)
