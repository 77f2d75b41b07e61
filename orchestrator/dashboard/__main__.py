"""`python -m orchestrator.dashboard`"""
import sys

from .cli import main

sys.exit(main())
