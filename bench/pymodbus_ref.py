"""The yardstick for the daemon's CPU per read: pymodbus's synchronous RTU client reading
an SDM-style block (16 input registers: 8 float32 values) from pymodbus's own serial
server over pseudo-terminals, measured per CPU-second of the client process.

    python bench/pymodbus_ref.py                 # prints the BENCH line alone
    python bench/pymodbus_ref.py serve           # prints the client's port; serves until EOF
    python bench/pymodbus_ref.py client PORT S   # reads for S seconds, prints JSON

`measure(seconds)` runs both as subprocesses and returns the client's reads per
CPU-second. The server listens on one PTY, the client opens another, and the server
process copies bytes between the two masters (as ``socat pty pty`` would), so that each
program opens an ordinary serial device by name; only the client's CPU is counted.
Nothing here stores or schedules: that is the bare client the daemon is compared with.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tty

BLOCK = 16  # registers: SDM630 voltage L1..L3, current L1..L3, power L1..L2 (FC 4)
VALUES = [230.1, 229.8, 231.0, 5.25, 4.75, 6.0, 1207.5, 1091.6]
SLAVE = 1


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, os.ttyname(slave)


async def _serve() -> None:
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    loop = asyncio.get_running_loop()
    server_master, server_port = _pty()
    client_master, client_port = _pty()

    def relay(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        os.write(dst, data)

    loop.add_reader(server_master, relay, server_master, client_master)
    loop.add_reader(client_master, relay, client_master, server_master)
    registers = [SimData(address=0, values=VALUES, datatype=DataType.FLOAT32)]
    bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    holding = [SimData(address=0, values=0, datatype=DataType.REGISTERS)]
    device = SimDevice(id=SLAVE, simdata=(bits, bits, holding, registers))
    server = ModbusSerialServer(
        device, framer=FramerType.RTU, port=server_port, baudrate=115200, parity="N"
    )
    serving = asyncio.create_task(server.serve_forever())
    print(client_port, flush=True)
    # Serve until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()
    serving.cancel()


def _client(port: str, seconds: float) -> dict[str, float]:
    from pymodbus import FramerType
    from pymodbus.client import ModbusSerialClient

    client = ModbusSerialClient(
        port, framer=FramerType.RTU, baudrate=115200, parity="N", timeout=2, retries=0
    )
    if not client.connect():
        raise SystemExit(f"pymodbus client: cannot open {port}")

    def read() -> None:
        reply = client.read_input_registers(0, count=BLOCK, device_id=SLAVE)
        if reply.isError():
            raise SystemExit(f"pymodbus client: {reply}")
        values = client.convert_from_registers(
            reply.registers, client.DATATYPE.FLOAT32, word_order="big"
        )
        assert isinstance(values, list) and len(values) == BLOCK // 2

    for _ in range(50):  # warm up: imports, first allocations
        read()
    reads, c0, end = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        read()
        reads += 1
    cpu = time.process_time() - c0
    client.close()
    return {"reads": reads, "cpu_s": cpu, "reads_per_cpu_s": reads / cpu}


def measure(seconds: float) -> float:
    """Reads per CPU-second of pymodbus's client process over ``seconds`` of reading."""
    server = subprocess.Popen(
        [sys.executable, __file__, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        if not port:
            raise RuntimeError("the pymodbus server did not start")
        out = subprocess.run(
            [sys.executable, __file__, "client", port, str(seconds)],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        result: dict[str, float] = json.loads(out.stdout)
        return result["reads_per_cpu_s"]
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve())
        return 0
    if sys.argv[1:2] == ["client"]:
        print(json.dumps(_client(sys.argv[2], float(sys.argv[3]))))
        return 0
    print(f"BENCH pymodbus_client_reads_per_cpu_s {measure(10):.0f} reads/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
