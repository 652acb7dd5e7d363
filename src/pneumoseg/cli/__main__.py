"""`python -m pneumoseg.cli ...`, e.g. under `torchrun -m pneumoseg.cli`."""

from pneumoseg.cli import main

main()
