"""``python -m benchmarks [bench] --db URL ...``"""

import sys

from .cli import main

sys.exit(main())
