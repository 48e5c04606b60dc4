"""``python -m smec.cli …`` is ``smec …``."""
from smec.cli import main

if __name__ == "__main__":
    main()
