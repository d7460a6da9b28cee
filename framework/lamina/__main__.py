"""`python -m lamina` runs the CLI."""
from .cli import main

main()
