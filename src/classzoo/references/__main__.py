"""``python -m classzoo.references REFERENCE [flags...]`` (the scripts/ launchers call this)."""

import sys

from classzoo.references import main

sys.exit(main())
