"""CRC-16/MODBUS, table-driven: it runs over every byte sent and received, so the
table is built once at import and the loop does one lookup per byte."""

from __future__ import annotations


def _make_crc_table() -> tuple[int, ...]:
    # [SL] Appendix B §6.2.2: polynomial 0xA001 (0x8005 bit-reversed), registers shifted
    # right because RTU sends the least significant bit of each character first.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (init 0xFFFF, no final XOR); the ADU carries it low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _with_crc(body: bytes) -> bytes:
    # [SL] §2.5.1.2: "the low-order byte of the field is appended first".
    return body + crc16(body).to_bytes(2, "little")
