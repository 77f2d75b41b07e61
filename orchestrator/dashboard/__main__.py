"""`python -m orchestrator.dashboard`"""

import sys

from orchestrator.cli.dashboard import main

sys.exit(main())
