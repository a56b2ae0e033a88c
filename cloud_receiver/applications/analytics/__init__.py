"""Utility analytics on the stored readings: energy between boundaries (`.energy`),
usage and load curves (`.usage`), line loss (`.lineloss`), theft and tamper suspects
(`.suspects`, `.tamper`), next-day load forecasts (`.forecast`) and their plots
(`.plots`)."""
