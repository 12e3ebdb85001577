"""``python -m inf2_deploy.cli``."""
import sys

from . import main

sys.exit(main())
