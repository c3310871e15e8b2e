"""``python -m semcorr_ros.cli`` = ``semcorr``."""

import sys

from semcorr_ros.cli import main

sys.exit(main())
