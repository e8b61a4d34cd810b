"""`python -m hpoq.producer` is the `hpoq` command."""

from hpoq.producer.cli import main

main()
