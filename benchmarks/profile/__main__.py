"""``python -m benchmarks.profile PROBE ...``"""

import sys

from . import main

sys.exit(main())
