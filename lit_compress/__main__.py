"""``python -m lit_compress`` runs the ``lit-compress`` command."""

from lit_compress.cli import main

if __name__ == "__main__":
    main()
