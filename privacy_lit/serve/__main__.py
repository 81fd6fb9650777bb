"""``python -m privacy_lit.serve``: the same as ``python -m privacy_lit serve``, without importing
Lightning (a proxy starts in the time torch takes to import)."""

import sys

from privacy_lit.serve import main

sys.exit(main())
