import sys

from shapley_svc.cli import main

sys.exit(main())
