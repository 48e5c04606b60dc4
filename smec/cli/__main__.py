"""``python -m smec.cli …`` is ``smec …``."""
from smec.cli import main

main()
