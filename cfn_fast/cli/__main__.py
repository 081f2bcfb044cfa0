"""``python -m cfn_fast.cli``: the ``cfn`` command."""
import sys

from . import main

sys.exit(main())
