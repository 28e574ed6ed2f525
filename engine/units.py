"""Units the engine reports in. Every memory figure is GiB (2^30 bytes), the seed's "GB" fields too."""

GIB = float(1 << 30)
MIB = float(1 << 20)
