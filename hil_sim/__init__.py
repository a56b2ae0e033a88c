"""Hardware-in-the-loop simulator: meters, buses and their faults on virtual serial ports."""
