import sys

from sustaindiffusion.operator.cli import main

sys.exit(main())
