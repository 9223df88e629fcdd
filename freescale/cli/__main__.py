import sys

from freescale.cli.commands import main

sys.exit(main())
