"""``python -m featurestore`` runs the command line."""

import sys

from featurestore.cli import main

sys.exit(main())
