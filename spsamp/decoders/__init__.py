"""Decoders, one module per ``method=`` option (``conf/method/<name>.yaml`` names the class)."""

from spsamp.decoders.base import DecodeOutput, DecodeStats, Decoder

__all__ = ["DecodeOutput", "DecodeStats", "Decoder"]
