"""``python -m agseg`` (and ``torchrun ... -m agseg train CONFIG``): the command line."""

from agseg.cli import main

if __name__ == "__main__":
    main()
