"""`python -m recorder.cli ...` runs the `recorder` command."""

import sys

from recorder.cli.main import main

sys.exit(main())
