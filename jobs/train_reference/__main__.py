"""``python -m jobs.train_reference``."""
from .main import main

main()
