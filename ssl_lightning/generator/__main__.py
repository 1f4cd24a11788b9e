"""`python -m ssl_lightning.generator`: the `ssl-make-jets` command without the console script."""

from ssl_lightning.generator.cli import main

if __name__ == "__main__":
    main()
