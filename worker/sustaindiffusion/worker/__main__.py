import sys

from sustaindiffusion.worker.cli import main

sys.exit(main())
