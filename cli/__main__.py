"""``python -m fredset_cli ARGS``: the ``fredset`` command, for launchers that start a module
(``torchrun --nproc-per-node 4 -m fredset_cli distill ...``)."""

from .main import cli

if __name__ == "__main__":
    cli(prog_name="fredset")
