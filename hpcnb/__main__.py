"""`python -m hpcnb` runs the same CLI as the `hpcnb` entry point."""

from hpcnb.cli import main

if __name__ == "__main__":
    main()
