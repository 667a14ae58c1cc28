import sys

from txfbtftp._daemon.cli import main

sys.exit(main())
