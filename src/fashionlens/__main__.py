"""``python -m fashionlens`` (and ``torchrun -m fashionlens``): the command line."""

from fashionlens.cli import main

main()
