"""``python -m raftkv_cli``: the same command as the ``raftkv`` console script."""

from raftkv_cli.main import main

if __name__ == "__main__":
    main(prog_name="raftkv")
