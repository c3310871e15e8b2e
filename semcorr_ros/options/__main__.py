"""``python -m semcorr_ros.options --markdown | --update-docs MD | --check MD`` (see :mod:`.docs`)."""

import sys

from semcorr_ros.options.docs import main

sys.exit(main())
